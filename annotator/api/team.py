"""REST for the team: the review queue and its next item, assignments, agreement, adjudication and
gold items, and who controls a live trace.

Roles: every member reads the queue, the counters and the agreement; owners assign; reviewers (and
owners) adjudicate, approve or reject corrections and keep gold items.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.http import JsonResponse
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.response import Response

from annotator import selectors
from annotator.api import serializers as s
from annotator.api.pagination import KeysetPagination
from annotator.api.views import ProjectScoped
from annotator.errors import InvalidInput
from annotator.models import Category, Role, Trace, Verdict
from annotator.services import adjudication, assignments, claims


def _flag(value: str | None, name: str) -> bool | None:
    if value in (None, ""):
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false.")


_step_counts = selectors.with_step_counts


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("mine", bool, description="Only traces of prompts assigned to you"),
            OpenApiParameter("reviewed", bool, description="Reviewed by you (with mine) or by anyone (without)"),
            OpenApiParameter("verdict", str, enum=Verdict.values, description="The trace's (adjudicated) verdict"),
            OpenApiParameter("disagreement", bool, description="Reviewers disagree and nobody adjudicated"),
            OpenApiParameter("category", str, enum=Category.values),
            OpenApiParameter("order", str, enum=list(selectors.QUEUE_ORDERS),
                             description="arrival (oldest first, the default), or a triage order (the "
                             "traces most likely wrong first, from the machine step scores): lowest_score "
                             "(the lowest score of any step or the answer first), disagreement (the largest "
                             "spread between scorers' scores of one step or the answer first; traces with "
                             "fewer than two scorers last) or confident_wrong (traces whose final answer is "
                             "wrong against the prompt's reference, highest mean step score first; then the "
                             "traces that cannot be checked, then the right ones). triage_score is the value "
                             "sorted by."),
        ]
    )
)
class QueueView(ProjectScoped, generics.ListAPIView):
    """The review queue, oldest first. It changes live: /ws/projects/{p}/ says when."""

    serializer_class = s.QueueItemSerializer
    pagination_class = KeysetPagination
    count_cap: int | None = None  # the paginator's exact-count cap for this request (None: COUNT_CAP)
    known_count: int | None = None  # the count, where the view knows it exactly without counting

    def list(self, request, *args, **kwargs):
        # A page walks an index and stops after 51 rows, but PostgreSQL prices the walk as a read of
        # the whole project (it cannot know where the page's rows lie) and, above jit_above_cost,
        # compiles the query first: 25-30 ms of JIT for a 2 ms read (mine, to do at 100k traces).
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            return super().list(request, *args, **kwargs)

    def get_queryset(self):
        q = self.request.query_params
        verdict = q.get("verdict") or None
        if verdict and verdict not in Verdict.values:
            raise InvalidInput(f"verdict must be one of {', '.join(Verdict.values)}.")
        category = q.get("category") or None
        if category and category not in Category.values:
            raise InvalidInput(f"category must be one of {', '.join(Category.values)}.")
        order = q.get("order") or "arrival"
        if order not in selectors.QUEUE_ORDERS:
            raise InvalidInput(f"order must be one of {', '.join(selectors.QUEUE_ORDERS)}.", code="bad_order")
        mine = bool(_flag(q.get("mine"), "mine"))
        reviewed = _flag(q.get("reviewed"), "reviewed")
        disputed = _flag(q.get("disagreement"), "disagreement")
        if mine:
            # Yours, all / to do / done: the count is your queue counter's (exact, one row). With another
            # filter it is counted: each row an assignment lookup (and a review lookup), exact up to 1,000.
            self.count_cap = selectors.MINE_COUNT_CAP
            if verdict is None and disputed is None and category is None:
                self.known_count = selectors.queue_mine_count(self.project, self.request.user, reviewed=reviewed)
        qs = selectors.queue_list(
            self.project,
            self.request.user,
            mine=mine,
            reviewed=reviewed,
            verdict=verdict,
            disputed=disputed,
            category=category,
            order=order,
        )
        return _step_counts(qs.select_related("prompt"))


class QueueNextView(ProjectScoped):
    """Your next item: the first trace after `after` (wrapping round) assigned to you that you have
    not reviewed; with none left, an assigned prompt that has no trace yet."""

    serializer_class = s.QueueNextSerializer

    @extend_schema(parameters=[OpenApiParameter("after", int, description="The trace you are on")])
    def get(self, request, project_id):
        raw = request.query_params.get("after")
        try:
            after = int(raw) if raw else None
        except ValueError:
            raise InvalidInput("after takes a trace id.") from None
        trace, prompt = selectors.queue_next(self.project, request.user, after=after)
        if trace is not None:
            trace = _step_counts(selectors.queue_list(self.project, request.user).select_related("prompt")).get(
                pk=trace.pk
            )
        if prompt is not None:
            prompt = selectors.prompt_list(self.project).get(pk=prompt.pk)
        left = selectors.queue_left(self.project, request.user)
        return Response(self.get_serializer({"trace": trace, "prompt": prompt, "left": left}).data)


class QueueCountsView(ProjectScoped):
    """Counters for the queue: yours (assigned, done, left) and the project's."""

    serializer_class = s.QueueCountsSerializer

    def get(self, request, project_id):
        return Response(self.get_serializer(selectors.queue_counts(self.project, request.user)).data)


class AssignmentListView(ProjectScoped, generics.ListAPIView):
    """Who has which prompt. POST distributes prompts with an overlap (owners)."""

    serializer_class = s.AssignmentSerializer
    write_role = Role.OWNER

    @extend_schema(parameters=[OpenApiParameter("annotator", str), OpenApiParameter("prompt", int)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = selectors.assignment_list(self.project)
        who = self.request.query_params.get("annotator")
        if who:
            qs = qs.filter(annotator__username=who)
        prompt = self.request.query_params.get("prompt")
        if prompt:
            try:
                qs = qs.filter(prompt_id=int(prompt))
            except ValueError:
                raise InvalidInput("prompt takes a prompt id.") from None
        return qs

    @extend_schema(request=s.AssignInputSerializer, responses={201: s.AssignResultSerializer})
    def post(self, request, project_id):
        data = s.AssignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = assignments.assignments_distribute(project=self.project, actor=request.user, **data.validated_data)
        return Response({"created": len(created)}, status=status.HTTP_201_CREATED)


class AssignmentDetailView(ProjectScoped):
    serializer_class = s.AssignmentSerializer
    write_role = Role.OWNER

    def delete(self, request, project_id, assignment_id):
        found = selectors.get_in_project(selectors.assignment_list(self.project), self.project, assignment_id,
                                         what="Assignment")
        assignments.assignment_remove(assignment=found, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AssignmentProgressView(ProjectScoped):
    """Per annotator: prompts assigned, their traces, done and left."""

    serializer_class = s.AssignmentProgressSerializer
    pagination_class = None

    @extend_schema(responses=s.AssignmentProgressSerializer(many=True))
    def get(self, request, project_id):
        return Response(self.get_serializer(selectors.assignment_progress(self.project), many=True).data)


class AgreementView(ProjectScoped):
    """Agreement per label family: Krippendorff's alpha, Cohen's kappa per pair and against the
    others' consensus, gold accuracy, alpha per period; and per annotator: items, median time."""

    serializer_class = s.AgreementSerializer

    @extend_schema(parameters=[OpenApiParameter("bucket", str, enum=["day", "week"])])
    def get(self, request, project_id):
        bucket = request.query_params.get("bucket") or "week"
        if bucket not in ("day", "week"):
            raise InvalidInput("bucket must be day or week.")
        return Response(self.get_serializer(selectors.agreement_report(self.project, bucket=bucket)).data)


class AdjudicationView(ProjectScoped):
    """A reviewer's resolution of the trace's reviews (it wins in the queue and in datasets)."""

    serializer_class = s.AdjudicationSerializer
    write_role = Role.REVIEWER

    @extend_schema(request=s.AdjudicationInputSerializer, responses={200: s.AdjudicationSerializer})
    def put(self, request, project_id, trace_id):
        data = s.AdjudicationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        adj = adjudication.adjudication_set(trace=self.get_trace(trace_id), actor=request.user, **data.validated_data)
        return Response(self.get_serializer(adj).data)

    @extend_schema(responses={204: None, 409: s.ErrorSerializer})  # 409: the trace has no adjudication
    def delete(self, request, project_id, trace_id):
        adjudication.adjudication_clear(trace=self.get_trace(trace_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CorrectionAdjudicateView(ProjectScoped):
    """Approve or reject a correction (reviewers). Rejected corrections never become training pairs."""

    serializer_class = s.CorrectionSerializer
    write_role = Role.REVIEWER

    @extend_schema(request=s.CorrectionAdjudicateSerializer, responses={200: s.CorrectionSerializer})
    def post(self, request, project_id, correction_id):
        data = s.CorrectionAdjudicateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        found = selectors.get_in_project(selectors.correction_list(self.project), self.project, correction_id,
                                         what="Correction")
        done = adjudication.correction_adjudicate(correction=found, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(selectors.correction_list(self.project).get(pk=done.pk)).data)


class GoldListView(ProjectScoped, generics.ListAPIView):
    """Gold items and their known answers (reviewers: supervisors must not see the answers)."""

    serializer_class = s.GoldSerializer
    read_role = Role.REVIEWER
    pagination_class = None

    def get_queryset(self):
        return selectors.gold_list(self.project)


class GoldView(ProjectScoped):
    """Make a trace a gold item with its known-correct review, or stop it being one (reviewers)."""

    serializer_class = s.GoldSerializer
    read_role = Role.REVIEWER
    write_role = Role.REVIEWER

    @extend_schema(request=s.GoldInputSerializer, responses={200: s.GoldSerializer})
    def put(self, request, project_id, trace_id):
        data = s.GoldInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        gold = adjudication.gold_set(trace=self.get_trace(trace_id), actor=request.user, **data.validated_data)
        return Response(self.get_serializer(gold).data)

    @extend_schema(responses={204: None, 409: s.ErrorSerializer})  # 409: the trace is not a gold item
    def delete(self, request, project_id, trace_id):
        adjudication.gold_clear(trace=self.get_trace(trace_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ControllerView(ProjectScoped):
    """Who controls the live trace now (null: nobody; the next control action takes it)."""

    serializer_class = s.ControllerSerializer

    @extend_schema(responses={200: s.ControllerSerializer(allow_null=True)})
    def get(self, request, project_id, trace_id):
        trace = self.get_trace(trace_id, Trace.objects)
        current = claims.controller_of(trace.pk)
        if current is None:
            # DRF renders a None body as an empty one with no content type; the schema says JSON null.
            return JsonResponse(None, safe=False)
        return Response(self.get_serializer(current).data)


P = "projects/<int:project_id>"
T = f"{P}/traces/<int:trace_id>"

urlpatterns = [
    path(f"{P}/queue/", QueueView.as_view(), name="queue"),
    path(f"{P}/queue/next/", QueueNextView.as_view(), name="queue-next"),
    path(f"{P}/queue/counts/", QueueCountsView.as_view(), name="queue-counts"),
    path(f"{P}/assignments/", AssignmentListView.as_view(), name="assignment-list"),
    path(f"{P}/assignments/progress/", AssignmentProgressView.as_view(), name="assignment-progress"),
    path(f"{P}/assignments/<int:assignment_id>/", AssignmentDetailView.as_view(), name="assignment-detail"),
    path(f"{P}/agreement/", AgreementView.as_view(), name="agreement"),
    path(f"{P}/gold/", GoldListView.as_view(), name="gold-list"),
    path(f"{T}/gold/", GoldView.as_view(), name="trace-gold"),
    path(f"{T}/adjudication/", AdjudicationView.as_view(), name="trace-adjudication"),
    path(f"{T}/controller/", ControllerView.as_view(), name="trace-controller"),
    path(f"{P}/corrections/<int:correction_id>/adjudicate/", CorrectionAdjudicateView.as_view(),
         name="correction-adjudicate"),
]
