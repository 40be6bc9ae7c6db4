"""Step labels, trace reviews and comparisons: one row per annotator, updated in place."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from annotator.errors import InvalidInput, NotFound
from annotator.models import (
    Comparison,
    KnowledgeLabel,
    SafetyLabel,
    Step,
    StepLabel,
    Trace,
    TraceReview,
    ValueLabel,
    Verdict,
)
from annotator.services.audit import audit_record
from trainer_worker.vocabulary.labels import SAFETY_TAGS, STEP_RATINGS


def _user(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username}


def label_payload(label: StepLabel) -> dict[str, Any]:
    return {
        "id": label.pk,
        "annotator": _user(label.annotator),
        "rating": label.rating,
        "safety_tags": label.safety_tags,
        "note": label.note,
    }


def review_payload(review: TraceReview) -> dict[str, Any]:
    return {
        "id": review.pk,
        "annotator": _user(review.annotator),
        "verdict": review.verdict,
        "safety_label": review.safety_label,
        "value_label": review.value_label,
        "knowledge_label": review.knowledge_label,
        "note": review.note,
    }


def _publish_on_commit(trace_id: int, event_type: str, **payload: Any) -> None:
    from annotator import events

    transaction.on_commit(lambda: events.publish_trace_event(trace_id, event_type, **payload))


def _check_rating(rating: Any) -> int | None:
    if rating is None or rating == "unsure":
        return None
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in STEP_RATINGS:
        raise InvalidInput('rating must be 1, 0, -1, or null / "unsure".', code="bad_rating")
    return rating


def _check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("safety_tags must be a list of strings.")
    unknown = sorted(set(tags) - set(SAFETY_TAGS))
    if unknown:
        raise InvalidInput(f"Unknown safety tag(s): {', '.join(unknown)}. Known: {', '.join(SAFETY_TAGS)}.")
    return sorted(set(tags), key=tags.index)


def step_get(*, trace: Trace, index: Any) -> Step:
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidInput("step index must be an integer.", code="bad_step")
    step = trace.steps.filter(index=index).first()
    if step is None:
        raise NotFound(f"Trace {trace.pk} has no step {index}.", code="unknown_step")
    return step


@transaction.atomic
def step_label_set(*, step: Step, annotator: Any, rating: Any, safety_tags: Any = None, note: Any = "") -> StepLabel:
    value = _check_rating(rating)
    tags = _check_tags(safety_tags)
    if not isinstance(note, str):
        raise InvalidInput("note must be a string.")
    label, created = StepLabel.objects.update_or_create(
        step=step, annotator=annotator, defaults={"rating": value, "safety_tags": tags, "note": note}
    )
    audit_record(
        project=step.trace.project,
        actor=annotator,
        action="step_label.set",
        target=label,
        data={"trace": step.trace_id, "step": step.index, "rating": value, "safety_tags": tags, "created": created},
    )
    _publish_on_commit(step.trace_id, "label.updated", step_index=step.index, label=label_payload(label))
    return label


@transaction.atomic
def step_label_clear(*, step: Step, annotator: Any) -> bool:
    """Remove your label of a step (pressing its rating again, or undo). False: there was none."""
    deleted, _ = StepLabel.objects.filter(step=step, annotator=annotator).delete()
    if not deleted:
        return False
    audit_record(project=step.trace.project, actor=annotator, action="step_label.cleared", target=step,
                 data={"trace": step.trace_id, "step": step.index})
    _publish_on_commit(step.trace_id, "label.removed", step_index=step.index, annotator=_user(annotator))
    return True


def _check_choice(value: Any, choices: type, field: str) -> str:
    if value in (None, ""):
        return ""
    if value not in choices.values:
        raise InvalidInput(f"{field} must be one of {', '.join(choices.values)}.")
    return value


REVIEW_LABELS = ("safety_label", "value_label", "knowledge_label")
MAX_LEAD_TIME_S = 7 * 24 * 3600


def review_labels_check(
    *, verdict: Any, safety_label: Any = "", value_label: Any = "", knowledge_label: Any = ""
) -> dict[str, str]:
    """A verdict and the three SafeWork labels, checked (reviews, adjudications and gold share it)."""
    if verdict not in Verdict.values:
        raise InvalidInput(f"verdict must be one of {', '.join(Verdict.values)}.")
    return {
        "verdict": verdict,
        "safety_label": _check_choice(safety_label, SafetyLabel, "safety_label"),
        "value_label": _check_choice(value_label, ValueLabel, "value_label"),
        "knowledge_label": _check_choice(knowledge_label, KnowledgeLabel, "knowledge_label"),
    }


def _check_lead_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_LEAD_TIME_S:
        raise InvalidInput(f"lead_time_s must be a number of seconds between 0 and {MAX_LEAD_TIME_S}.")
    return float(value)


def trace_summary_refresh(*, trace_id: int) -> Trace:
    """Recompute the trace's review summary (review_count, verdict, disputed) inside the caller's
    transaction; the adjudication, when there is one, decides the verdict and ends the dispute."""
    from annotator.models import Adjudication

    trace = Trace.objects.select_for_update().get(pk=trace_id)
    rows = list(TraceReview.objects.filter(trace_id=trace_id).values("verdict", *REVIEW_LABELS))
    adjudication = Adjudication.objects.filter(trace_id=trace_id).first()
    verdicts = {r["verdict"] for r in rows if r["verdict"]}
    split = len(verdicts) > 1 or any(len({r[f] for r in rows if r[f]}) > 1 for f in REVIEW_LABELS)
    if adjudication is not None:
        verdict, disputed = adjudication.verdict, False
    else:
        verdict, disputed = (verdicts.pop() if len(verdicts) == 1 else ""), split
    trace.review_count, trace.verdict, trace.disputed = len(rows), verdict, disputed
    trace.save(update_fields=["review_count", "verdict", "disputed"])
    return trace


@transaction.atomic
def trace_review_set(
    *,
    trace: Trace,
    annotator: Any,
    verdict: Any,
    safety_label: Any = "",
    value_label: Any = "",
    knowledge_label: Any = "",
    note: Any = "",
    lead_time_s: Any = None,
) -> TraceReview:
    fields: dict[str, Any] = review_labels_check(
        verdict=verdict, safety_label=safety_label, value_label=value_label, knowledge_label=knowledge_label
    )
    if not isinstance(note, str):
        raise InvalidInput("note must be a string.")
    fields["note"] = note
    lead = _check_lead_time(lead_time_s)
    if lead is not None:  # a later edit that measured nothing keeps the first measurement
        fields["lead_time_s"] = lead
    review, created = TraceReview.objects.update_or_create(trace=trace, annotator=annotator, defaults=fields)
    summary = trace_summary_refresh(trace_id=trace.pk)
    audit_record(
        project=trace.project,
        actor=annotator,
        action="trace_review.set",
        target=review,
        data={"trace": trace.pk, **{k: v for k, v in fields.items() if k != "note"}, "created": created},
    )
    _publish_on_commit(trace.pk, "review.updated", review=review_payload(review))
    _team_on_commit(trace, summary, review, annotator)
    return review


@transaction.atomic
def trace_review_clear(*, trace: Trace, annotator: Any) -> bool:
    """Remove your review of a trace (undo). False: there was none."""
    deleted, _ = TraceReview.objects.filter(trace=trace, annotator=annotator).delete()
    if not deleted:
        return False
    summary = trace_summary_refresh(trace_id=trace.pk)
    audit_record(project=trace.project, actor=annotator, action="trace_review.cleared", target=trace)
    _publish_on_commit(trace.pk, "review.removed", annotator=_user(annotator))
    from annotator import events

    event = {"trace": trace.pk, "prompt": trace.prompt_id, "review_count": summary.review_count,
             "verdict": summary.verdict, "disputed": summary.disputed, "by": _user(annotator)}
    transaction.on_commit(lambda: events.publish_project_event(trace.project_id, "queue.reviewed", **event))
    return True


def _team_on_commit(trace: Trace, summary: Trace, review: TraceReview, annotator: Any) -> None:
    """What a saved review tells the team: the project's queues (live) and its webhooks."""
    from annotator import events
    from annotator.services.webhooks import webhook_emit

    queue_event = {
        "trace": trace.pk,
        "prompt": trace.prompt_id,
        "review_count": summary.review_count,
        "verdict": summary.verdict,
        "disputed": summary.disputed,
        "by": _user(annotator),
    }
    transaction.on_commit(lambda: events.publish_project_event(trace.project_id, "queue.reviewed", **queue_event))
    webhook_emit(
        project=trace.project,
        event_type="trace.reviewed",
        data={"trace": trace.pk, "prompt": trace.prompt_id, "review": review_payload(review), **{
            k: queue_event[k] for k in ("review_count", "verdict", "disputed")}},
    )


@transaction.atomic
def comparison_create(*, preferred: Trace, other: Trace, annotator: Any, note: str = "") -> Comparison:
    if preferred.pk == other.pk:
        raise InvalidInput("Compare two different traces.")
    if preferred.project_id != other.project_id or preferred.prompt_id != other.prompt_id:
        raise InvalidInput("Only traces of the same prompt can be compared.")
    comparison, _ = Comparison.objects.update_or_create(
        preferred=preferred,
        other=other,
        annotator=annotator,
        defaults={"project_id": preferred.project_id, "note": note},
    )
    # A later, opposite judgement by the same annotator replaces the earlier one.
    Comparison.objects.filter(preferred=other, other=preferred, annotator=annotator).delete()
    audit_record(
        project=preferred.project,
        actor=annotator,
        action="comparison.set",
        target=comparison,
        data={"preferred": preferred.pk, "other": other.pk},
    )
    return comparison
