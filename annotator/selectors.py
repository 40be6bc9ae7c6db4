"""Reads, scoped to one project. Objects of other projects are indistinguishable from missing ones."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from annotator.errors import NotFound
from annotator.models import (
    AuditEvent,
    Correction,
    DatasetSnapshot,
    EvalResult,
    Membership,
    MetricPoint,
    ModelVersion,
    Project,
    Prompt,
    Step,
    StepLabel,
    Trace,
    TraceReview,
    TrainingRun,
)


def projects_for_user(user) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user=user).distinct().order_by("id")


def roles_of_user(user) -> dict[int, str]:
    """{project id: the user's role} for every project the user is a member of."""
    return dict(Membership.objects.filter(user=user).values_list("project_id", "role"))


def get_in_project(queryset: QuerySet, project: Project, pk, *, what: str):
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(f"{what} not found.") from None
    obj = queryset.filter(project=project, pk=pk).first()
    if obj is None:
        raise NotFound(f"{what} not found.")
    return obj


def prompt_list(
    project: Project, *, category: str | None = None, search: str | None = None, has_images: bool | None = None
) -> QuerySet[Prompt]:
    qs = Prompt.objects.filter(project=project).prefetch_related("images").annotate(trace_count=Count("traces"))
    if category:
        qs = qs.filter(category=category)
    if search:
        qs = qs.filter(messages__icontains=search)
    if has_images is not None:
        qs = qs.filter(images__isnull=not has_images).distinct()
    return qs.order_by("id")


def trace_list(
    project: Project,
    *,
    status: str | None = None,
    prompt_id: int | None = None,
    model_version_id: int | None = None,
    parent_id: int | None = None,
    category: str | None = None,
    started_by: str | None = None,
) -> QuerySet[Trace]:
    qs = Trace.objects.filter(project=project).annotate(step_count=Count("steps"))
    if status:
        qs = qs.filter(status=status)
    if prompt_id:
        qs = qs.filter(prompt_id=prompt_id)
    if model_version_id:
        qs = qs.filter(model_version_id=model_version_id)
    if parent_id:
        qs = qs.filter(parent_id=parent_id)
    if category:
        qs = qs.filter(prompt__category=category)
    if started_by:
        qs = qs.filter(created_by__username=started_by)
    return qs.order_by("id")


def trace_detail_queryset() -> QuerySet[Trace]:
    steps = Step.objects.order_by("index").prefetch_related(
        Prefetch("labels", queryset=StepLabel.objects.select_related("annotator"))
    )
    return Trace.objects.prefetch_related(
        Prefetch("steps", queryset=steps),
        Prefetch("reviews", queryset=TraceReview.objects.select_related("annotator")),
        "branches",
    ).select_related("prompt", "model_version")


def correction_list(project: Project) -> QuerySet[Correction]:
    return Correction.objects.filter(project=project).select_related("author").order_by("id")


def model_version_list(project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).order_by("id")


def audit_list(project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project).select_related("actor").order_by("-id")


def member_list(project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user", "project").order_by("id")


def snapshot_list(project: Project) -> QuerySet[DatasetSnapshot]:
    """The project's dataset snapshots, newest first."""
    return DatasetSnapshot.objects.filter(project=project).select_related("created_by").order_by("-id")


def run_list(project: Project) -> QuerySet[TrainingRun]:
    """The project's training runs, newest first."""
    return TrainingRun.objects.filter(project=project).prefetch_related("snapshots").order_by("-id")


def run_metrics(run_id: int) -> list[dict]:
    """Every metric point of the run as {step, name, value}, by step then name."""
    return list(MetricPoint.objects.filter(run_id=run_id).order_by("step", "name").values("step", "name", "value"))


def model_evals(version: ModelVersion) -> QuerySet[EvalResult]:
    return EvalResult.objects.filter(model_version=version).order_by("id")


def project_evals(project: Project) -> QuerySet[EvalResult]:
    return EvalResult.objects.filter(model_version__project=project).order_by("model_version_id", "id")
