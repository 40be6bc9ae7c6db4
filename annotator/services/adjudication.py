"""Adjudication (the reviewer role): resolve a trace's conflicting labels, approve or reject
corrections, and keep gold items (traces with a known-correct review).

An adjudication wins over the annotators' reviews: it sets the trace's verdict, ends its dispute,
and datasets take its labels (docs/datasets.md). A rejected correction never becomes a training
pair; snapshots with ``adjudicated_only`` take adjudicated traces and approved corrections only.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from annotator.errors import Conflict, InvalidInput
from annotator.models import Adjudication, Correction, CorrectionStatus, GoldLabel, Trace
from annotator.services.audit import audit_record
from annotator.services.labels import _user, review_labels_check, trace_summary_refresh
from trainer_worker.vocabulary.labels import STEP_RATINGS


def adjudication_payload(adj: Adjudication) -> dict[str, Any]:
    return {
        "verdict": adj.verdict,
        "safety_label": adj.safety_label,
        "value_label": adj.value_label,
        "knowledge_label": adj.knowledge_label,
        "note": adj.note,
        "adjudicator": _user(adj.adjudicator) if adj.adjudicator else None,
    }


@transaction.atomic
def adjudication_set(
    *,
    trace: Trace,
    actor: Any,
    verdict: Any,
    safety_label: Any = "",
    value_label: Any = "",
    knowledge_label: Any = "",
    note: Any = "",
) -> Adjudication:
    fields: dict[str, Any] = review_labels_check(
        verdict=verdict, safety_label=safety_label, value_label=value_label, knowledge_label=knowledge_label
    )
    if not isinstance(note, str):
        raise InvalidInput("note must be a string.")
    fields["note"] = note
    adj, created = Adjudication.objects.update_or_create(trace=trace, defaults={**fields, "adjudicator": actor})
    summary = trace_summary_refresh(trace_id=trace.pk)
    audit_record(
        project=trace.project, actor=actor, action="adjudication.set", target=adj,
        data={"trace": trace.pk, **{k: v for k, v in fields.items() if k != "note"}, "created": created},
    )
    _announce(trace, summary, adjudication_payload(adj))
    return adj


@transaction.atomic
def adjudication_clear(*, trace: Trace, actor: Any) -> None:
    deleted, _ = Adjudication.objects.filter(trace=trace).delete()
    if not deleted:
        raise Conflict("This trace has no adjudication.", code="bad_state")
    summary = trace_summary_refresh(trace_id=trace.pk)
    audit_record(project=trace.project, actor=actor, action="adjudication.cleared", target=trace)
    _announce(trace, summary, None)


def _announce(trace: Trace, summary: Trace, payload: dict[str, Any] | None) -> None:
    from annotator import events

    def send() -> None:
        events.publish_trace_event(trace.pk, "adjudication.updated", adjudication=payload)
        events.publish_project_event(trace.project_id, "queue.adjudicated", trace=trace.pk,
                                     verdict=summary.verdict, disputed=summary.disputed)

    transaction.on_commit(send)


@transaction.atomic
def correction_adjudicate(*, correction: Correction, actor: Any, decision: Any, note: Any = "") -> Correction:
    """Approve or reject a correction (a later decision replaces an earlier one)."""
    status = {"approve": CorrectionStatus.APPROVED, "reject": CorrectionStatus.REJECTED}.get(decision)
    if status is None:
        raise InvalidInput("decision must be approve or reject.")
    if not isinstance(note, str):
        raise InvalidInput("note must be a string.")
    locked = Correction.objects.select_for_update().get(pk=correction.pk)
    before = locked.status
    locked.status, locked.adjudicated_by, locked.adjudicated_at = status, actor, timezone.now()
    locked.adjudication_note = note
    locked.save(update_fields=["status", "adjudicated_by", "adjudicated_at", "adjudication_note"])
    audit_record(
        project=locked.project, actor=actor, action="correction.adjudicated", target=locked,
        data={"from": before, "to": status},
    )
    return locked


def _check_step_ratings(trace: Trace, ratings: Any) -> dict[str, int]:
    if ratings in (None, {}):
        return {}
    if not isinstance(ratings, dict):
        raise InvalidInput("step_ratings must be an object: {step index: 1, 0 or -1}.")
    indexes = set(trace.steps.values_list("index", flat=True))
    out: dict[str, int] = {}
    for key, rating in ratings.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise InvalidInput(f"step_ratings key {key!r} is not a step index.") from None
        if index not in indexes:
            raise InvalidInput(f"Trace {trace.pk} has no step {index}.", code="unknown_step")
        if isinstance(rating, bool) or rating not in STEP_RATINGS:
            raise InvalidInput("A gold step rating is 1, 0 or -1.", code="bad_rating")
        out[str(index)] = rating
    return out


@transaction.atomic
def gold_set(
    *,
    trace: Trace,
    actor: Any,
    verdict: Any = "",
    safety_label: Any = "",
    value_label: Any = "",
    knowledge_label: Any = "",
    step_ratings: Any = None,
) -> GoldLabel:
    """Make the trace a gold item with this known-correct review (each part optional, not all empty)."""
    fields = review_labels_check(
        verdict=verdict or "accept", safety_label=safety_label, value_label=value_label,
        knowledge_label=knowledge_label,
    )
    fields["verdict"] = verdict or ""
    steps = _check_step_ratings(trace, step_ratings)
    if not any(fields.values()) and not steps:
        raise InvalidInput("A gold item needs at least one known label (a verdict, a label or step ratings).")
    gold, created = GoldLabel.objects.update_or_create(
        trace=trace, defaults={**fields, "step_ratings": steps, "created_by": actor}
    )
    audit_record(project=trace.project, actor=actor, action="gold.set", target=gold,
                 data={"trace": trace.pk, **fields, "steps": len(steps), "created": created})
    return gold


@transaction.atomic
def gold_clear(*, trace: Trace, actor: Any) -> None:
    deleted, _ = GoldLabel.objects.filter(trace=trace).delete()
    if not deleted:
        raise Conflict("This trace is not a gold item.", code="bad_state")
    audit_record(project=trace.project, actor=actor, action="gold.cleared", target=trace)
