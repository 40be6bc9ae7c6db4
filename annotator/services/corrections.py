"""Corrections: edit step k of a trace → a branch trace that shares steps 0..k-1, has the human's
step k, and is queued for the model to continue from that prefix. The original stays untouched.

Once the correction commits, the branch starts generating (``generation.branch_start``) and the
project's auto-train policy counts it (``autotrain.autotrain_nudge``): both are called here, in
the same transaction, and act on commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.models import Correction, Step, StepOrigin, Trace, TraceStatus
from annotator.services.audit import audit_record
from annotator.services.generation import branch_start
from annotator.services.training.autotrain import autotrain_nudge
from annotator.services.webhooks import webhook_emit

MAX_STEP_CHARS = 4000


@transaction.atomic
def correction_create(
    *,
    trace: Trace,
    step_index: Any,
    text: Any,
    author: Any,
    expected_version: Any,
    reason: Any = "",
    origin: str = StepOrigin.HUMAN,
) -> Correction:
    """``origin``: who wrote the new step: a human, or the model (a candidate the supervisor picked
    from alternatives, annotator/services/alternatives.py)."""
    if isinstance(step_index, bool) or not isinstance(step_index, int) or step_index < 0:
        raise InvalidInput("step_index must be a non-negative integer.", code="bad_step")
    if not isinstance(text, str):
        raise InvalidInput("text must be a string.")
    if not text.strip():
        raise InvalidInput("The corrected step needs text.", code="empty_step")
    text = text.strip()
    if "\n" in text:
        raise InvalidInput("A step is one line; split longer corrections into several steps.", code="bad_step")
    if len(text) > MAX_STEP_CHARS:
        raise InvalidInput(f"A step holds at most {MAX_STEP_CHARS} characters.", code="too_large")
    if not isinstance(reason, str):
        raise InvalidInput("reason must be a string.")
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise InvalidInput("expected_version (the trace version you saw) must be an integer.", code="bad_version")

    locked = Trace.objects.select_for_update().get(pk=trace.pk)
    if locked.version != expected_version:
        raise Conflict(
            f"Trace {locked.pk} changed since you saw it (your version {expected_version}, now {locked.version}). "
            "Reload it and edit again; nothing was changed.",
            code="stale_version",
            details={"current_version": locked.version},
        )
    steps = list(locked.steps.order_by("index"))
    if step_index >= len(steps):
        raise NotFound(f"Trace {locked.pk} has no step {step_index} (it has {len(steps)}).", code="unknown_step")
    old = steps[step_index]
    if old.text == text:
        raise InvalidInput("The corrected step is the same as the original.", code="unchanged")

    branch = Trace.objects.create(
        project_id=locked.project_id,
        prompt_id=locked.prompt_id,
        model_version_id=locked.model_version_id,
        parent=locked,
        branch_step_index=step_index,
        sampling_params=locked.sampling_params,
        seed=locked.seed,
        mode=locked.mode,
        pace_tps=locked.pace_tps,
        status=TraceStatus.QUEUED,
        created_by=author,
    )
    Step.objects.bulk_create(
        [Step(trace=branch, index=s.index, text=s.text, origin=s.origin, copied_from=s) for s in steps[:step_index]]
        + [Step(trace=branch, index=step_index, text=text, origin=origin)]
    )
    locked.version += 1
    locked.save(update_fields=["version", "updated_at"])
    correction = Correction.objects.create(
        project_id=locked.project_id,
        original_trace=locked,
        corrected_trace=branch,
        step_index=step_index,
        old_text=old.text,
        new_text=text,
        reason=reason,
        author=author,
    )
    audit_record(
        project=locked.project,
        actor=author,
        action="correction.created",
        target=correction,
        data={"trace": locked.pk, "branch": branch.pk, "step": step_index, "old": old.text, "new": text},
    )
    branch_start(correction=correction)
    autotrain_nudge(project_id=locked.project_id)
    webhook_emit(project=locked.project, event_type="correction.created", data={
        "correction": correction.pk, "trace": locked.pk, "branch": branch.pk, "step_index": step_index,
        "old_text": old.text, "new_text": text, "reason": reason, "author": getattr(author, "username", None)})
    return correction
