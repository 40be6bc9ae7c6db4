"""REST for training runs, their metrics, promotion and evaluation results.

Roles: every member may list and read runs, their metrics and a model's evaluations (supervisors
watch what their corrections did); starting and cancelling runs and promoting a model take the
owner role, as do the other model and dataset decisions.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from annotator import selectors
from annotator.api import serializers as s
from annotator.api.views import ProjectScoped
from annotator.models import Role
from annotator.services.model_versions import model_promote
from annotator.services.training.runs import run_cancel, run_create


class RunListView(ProjectScoped, generics.ListAPIView):
    """The project's training runs, newest first. POST starts one (it trains in the background;
    watch /ws/runs/<id>/ or poll the detail)."""

    serializer_class = s.TrainingRunSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER

    def get_queryset(self):
        return selectors.run_list(self.project)

    @extend_schema(
        request=s.TrainingRunInputSerializer, responses={201: s.TrainingRunSerializer, 400: s.ErrorSerializer}
    )
    def post(self, request, project_id):
        data = s.TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        base = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, v["base_model"], what="Model version"
        )
        snapshots = [
            selectors.get_in_project(selectors.snapshot_list(self.project), self.project, pk, what="Dataset")
            for pk in dict.fromkeys(v["snapshots"])
        ]
        run = run_create(
            project=self.project, actor=request.user, stage=v["stage"], base_model=base, snapshots=snapshots,
            config=v.get("config"),
        )
        run = selectors.run_list(self.project).get(pk=run.pk)
        return Response(self.get_serializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(ProjectScoped):
    serializer_class = s.TrainingRunSerializer

    def get(self, request, project_id, run_id):
        run = selectors.get_in_project(selectors.run_list(self.project), self.project, run_id, what="Run")
        return Response(self.get_serializer(run).data)


class RunMetricsView(ProjectScoped):
    """Every metric point of the run, by step then name: [{step, name, value}]."""

    serializer_class = s.MetricPointSerializer
    pagination_class = None

    @extend_schema(responses=s.MetricPointSerializer(many=True))
    def get(self, request, project_id, run_id):
        run = selectors.get_in_project(selectors.run_list(self.project), self.project, run_id, what="Run")
        return Response(self.get_serializer(selectors.run_metrics(run.pk), many=True).data)


class RunCancelView(ProjectScoped):
    """Stop a run: a queued one is cancelled at once; a running one stops after the optimiser step
    in flight (status `cancelling`, then `cancelled`). 409 when it is already over."""

    serializer_class = s.TrainingRunSerializer
    write_role = Role.OWNER

    @extend_schema(request=None, responses={200: s.TrainingRunSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, run_id):
        run = selectors.get_in_project(selectors.run_list(self.project), self.project, run_id, what="Run")
        run_cancel(run=run, actor=request.user)
        return Response(self.get_serializer(selectors.run_list(self.project).get(pk=run.pk)).data)


class ModelPromoteView(ProjectScoped):
    """Make this model version the project's serving model; new traces generate with it."""

    serializer_class = s.ProjectSerializer
    write_role = Role.OWNER

    @extend_schema(request=None, responses={200: s.ProjectSerializer})
    def post(self, request, project_id, version_id):
        version = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, version_id, what="Model version"
        )
        project = model_promote(version=version, actor=request.user)
        return Response(self.get_serializer(project).data)


class ModelEvalsView(ProjectScoped):
    """Evaluation results of a model version (held-out accuracy, safety score, CoT length...)."""

    serializer_class = s.EvalResultSerializer
    pagination_class = None

    @extend_schema(responses=s.EvalResultSerializer(many=True))
    def get(self, request, project_id, version_id):
        version = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, version_id, what="Model version"
        )
        return Response(self.get_serializer(selectors.model_evals(version), many=True).data)


class ModelLineageView(ProjectScoped):
    """Where a model version came from: its parent, the run that trained it and that run's
    snapshots, its evaluations, and every promotion of it (who, when, what it replaced)."""

    serializer_class = s.LineageSerializer

    def get(self, request, project_id, version_id):
        version = selectors.get_in_project(
            selectors.model_version_list(self.project), self.project, version_id, what="Model version"
        )
        return Response(self.get_serializer(selectors.model_lineage(version)).data)


class ProjectEvalsView(ProjectScoped, generics.ListAPIView):
    """Every evaluation result of the project's model versions (the safety-vs-capability view)."""

    serializer_class = s.EvalResultSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.project_evals(self.project)


P = "projects/<int:project_id>"

urlpatterns = [
    path(f"{P}/runs/", RunListView.as_view(), name="run-list"),
    path(f"{P}/runs/<int:run_id>/", RunDetailView.as_view(), name="run-detail"),
    path(f"{P}/runs/<int:run_id>/metrics/", RunMetricsView.as_view(), name="run-metrics"),
    path(f"{P}/runs/<int:run_id>/cancel/", RunCancelView.as_view(), name="run-cancel"),
    path(f"{P}/models/<int:version_id>/promote/", ModelPromoteView.as_view(), name="model-version-promote"),
    path(f"{P}/models/<int:version_id>/evals/", ModelEvalsView.as_view(), name="model-version-evals"),
    path(f"{P}/models/<int:version_id>/lineage/", ModelLineageView.as_view(), name="model-version-lineage"),
    path(f"{P}/evals/", ProjectEvalsView.as_view(), name="project-evals"),
]
