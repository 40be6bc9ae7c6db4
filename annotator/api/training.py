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
from annotator.models import DatasetSnapshot, EvalResult, MetricPoint, ModelVersion, Role, TrainingRun
from annotator.services import training


def _runs(project):
    return TrainingRun.objects.filter(project=project).prefetch_related("snapshots").order_by("-id")


class RunListView(ProjectScoped, generics.ListAPIView):
    """The project's training runs, newest first. POST starts one (it trains in the background;
    watch /ws/runs/<id>/ or poll the detail)."""

    serializer_class = s.TrainingRunSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER

    def get_queryset(self):
        return _runs(self.project)

    @extend_schema(
        request=s.TrainingRunInputSerializer, responses={201: s.TrainingRunSerializer, 400: s.ErrorSerializer}
    )
    def post(self, request, project_id):
        data = s.TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        base = selectors.get_in_project(ModelVersion.objects, self.project, v["base_model"], what="Model version")
        snapshots = [
            selectors.get_in_project(DatasetSnapshot.objects, self.project, pk, what="Dataset")
            for pk in dict.fromkeys(v["snapshots"])
        ]
        run = training.run_create(
            project=self.project, actor=request.user, stage=v["stage"], base_model=base, snapshots=snapshots,
            config=v.get("config"),
        )
        return Response(self.get_serializer(_runs(self.project).get(pk=run.pk)).data, status=status.HTTP_201_CREATED)


class RunDetailView(ProjectScoped):
    serializer_class = s.TrainingRunSerializer

    def get(self, request, project_id, run_id):
        run = selectors.get_in_project(_runs(self.project), self.project, run_id, what="Run")
        return Response(self.get_serializer(run).data)


class RunMetricsView(ProjectScoped):
    """Every metric point of the run, by step then name: [{step, name, value}]."""

    serializer_class = s.MetricPointSerializer
    pagination_class = None

    @extend_schema(responses=s.MetricPointSerializer(many=True))
    def get(self, request, project_id, run_id):
        run = selectors.get_in_project(TrainingRun.objects, self.project, run_id, what="Run")
        rows = MetricPoint.objects.filter(run=run).order_by("step", "name").values("step", "name", "value")
        return Response(self.get_serializer(list(rows), many=True).data)


class RunCancelView(ProjectScoped):
    """Stop a run: a queued one is cancelled at once; a running one stops after the optimiser step
    in flight (status `cancelling`, then `cancelled`). 409 when it is already over."""

    serializer_class = s.TrainingRunSerializer
    write_role = Role.OWNER

    @extend_schema(request=None, responses={200: s.TrainingRunSerializer, 409: s.ErrorSerializer})
    def post(self, request, project_id, run_id):
        run = selectors.get_in_project(TrainingRun.objects, self.project, run_id, what="Run")
        training.run_cancel(run=run, actor=request.user)
        return Response(self.get_serializer(_runs(self.project).get(pk=run.pk)).data)


class ModelPromoteView(ProjectScoped):
    """Make this model version the project's serving model; new traces generate with it."""

    serializer_class = s.ProjectSerializer
    write_role = Role.OWNER

    @extend_schema(request=None, responses={200: s.ProjectSerializer})
    def post(self, request, project_id, version_id):
        version = selectors.get_in_project(ModelVersion.objects, self.project, version_id, what="Model version")
        project = training.model_promote(version=version, actor=request.user)
        return Response(self.get_serializer(project).data)


class ModelEvalsView(ProjectScoped):
    """Evaluation results of a model version (held-out accuracy, safety score, CoT length...)."""

    serializer_class = s.EvalResultSerializer
    pagination_class = None

    @extend_schema(responses=s.EvalResultSerializer(many=True))
    def get(self, request, project_id, version_id):
        version = selectors.get_in_project(ModelVersion.objects, self.project, version_id, what="Model version")
        rows = EvalResult.objects.filter(model_version=version).order_by("id")
        return Response(self.get_serializer(rows, many=True).data)


class ProjectEvalsView(ProjectScoped, generics.ListAPIView):
    """Every evaluation result of the project's model versions (the safety-vs-capability view)."""

    serializer_class = s.EvalResultSerializer
    pagination_class = None

    def get_queryset(self):
        return EvalResult.objects.filter(model_version__project=self.project).order_by("model_version_id", "id")


P = "projects/<int:project_id>"

urlpatterns = [
    path(f"{P}/runs/", RunListView.as_view(), name="run-list"),
    path(f"{P}/runs/<int:run_id>/", RunDetailView.as_view(), name="run-detail"),
    path(f"{P}/runs/<int:run_id>/metrics/", RunMetricsView.as_view(), name="run-metrics"),
    path(f"{P}/runs/<int:run_id>/cancel/", RunCancelView.as_view(), name="run-cancel"),
    path(f"{P}/models/<int:version_id>/promote/", ModelPromoteView.as_view(), name="model-version-promote"),
    path(f"{P}/models/<int:version_id>/evals/", ModelEvalsView.as_view(), name="model-version-evals"),
    path(f"{P}/evals/", ProjectEvalsView.as_view(), name="project-evals"),
]
