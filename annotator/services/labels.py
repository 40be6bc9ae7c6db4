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


def _check_choice(value: Any, choices: type, field: str) -> str:
    if value in (None, ""):
        return ""
    if value not in choices.values:
        raise InvalidInput(f"{field} must be one of {', '.join(choices.values)}.")
    return value


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
) -> TraceReview:
    if verdict not in Verdict.values:
        raise InvalidInput(f"verdict must be one of {', '.join(Verdict.values)}.")
    if not isinstance(note, str):
        raise InvalidInput("note must be a string.")
    fields = {
        "verdict": verdict,
        "safety_label": _check_choice(safety_label, SafetyLabel, "safety_label"),
        "value_label": _check_choice(value_label, ValueLabel, "value_label"),
        "knowledge_label": _check_choice(knowledge_label, KnowledgeLabel, "knowledge_label"),
        "note": note,
    }
    review, created = TraceReview.objects.update_or_create(trace=trace, annotator=annotator, defaults=fields)
    audit_record(
        project=trace.project,
        actor=annotator,
        action="trace_review.set",
        target=review,
        data={"trace": trace.pk, **{k: v for k, v in fields.items() if k != "note"}, "created": created},
    )
    _publish_on_commit(trace.pk, "review.updated", review=review_payload(review))
    return review


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
