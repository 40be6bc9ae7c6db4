"""K alternatives at a step (issue 12): sample K candidate steps from the prefix before step k of
a trace, score each with the project's scorers, and let a supervisor pick one (or write their own).

- ``alternatives_request`` (REST and socket): validates, stores a queued ``AlternativeSet`` and
  hands it to the generate worker once the transaction commits.
- ``alternatives_generate`` (the generate worker): one batched ``sample_steps`` call on the trace's
  model, then the scorers; the set ends ``ready`` or ``failed`` with its reason. A heartbeat says
  the worker still holds it; ``AlternativesSweep`` ends the sets of a worker that died.
- ``alternatives_pick``: the picked step becomes a branch (a correction whose new step the model
  wrote, or the supervisor's own text), and the choice becomes step-level preference records
  (``preference_step``, source ``alternatives``): the picked step against each candidate not picked.

Every change is sent to the trace's viewers as a ``trace.alternatives`` event carrying the set.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotator import events, flags, supervision
from annotator.enqueue import GENERATE_ALTERNATIVES, enqueue_on_commit
from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.generation.backends import MAX_TEMPERATURE, GenerationError, GenerationRequest, SamplingParams
from annotator.models import (
    AlternativeSet,
    AlternativesStatus,
    Correction,
    StepOrigin,
    Trace,
)
from annotator.services.audit import audit_record
from annotator.sweep import HeartbeatSweep
from trainer_worker.vocabulary.format import render_prefix

log = logging.getLogger(__name__)

DEFAULT_K = 4
MAX_K = 8
STEP_TOKENS = 96  # a candidate step is cut here if it has not reached its boundary
IN_FLIGHT_PER_TRACE = 2  # sets queued or sampling at once on one trace
DEFAULT_TEMPERATURE = 1.0  # when the trace itself was greedy: K greedy samples would be one candidate
IN_FLIGHT = (AlternativesStatus.QUEUED, AlternativesStatus.RUNNING)


def alternatives_json(alt: AlternativeSet) -> dict[str, Any]:
    """The set as REST and the socket show it."""
    return {
        "id": alt.pk,
        "trace": alt.trace_id,
        "step_index": alt.step_index,
        "k": alt.k,
        "seed": alt.seed,
        "params": alt.params,
        "status": alt.status,
        "error": alt.error,
        "candidates": alt.candidates,
        "picked": alt.picked,
        "picked_text": alt.picked_text,
        "picked_by": alt.picked_by_id,
        "branch": alt.branch_id,
        "created_at": alt.created_at.isoformat() if alt.created_at else None,
        "ready_at": alt.ready_at.isoformat() if alt.ready_at else None,
    }


def _announce(set_id: int) -> None:
    alt = AlternativeSet.objects.get(pk=set_id)
    events.publish_trace_event(alt.trace_id, "trace.alternatives", set=alternatives_json(alt))


def _int(value: Any, name: str, code: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}.", code=code)
    return value


@transaction.atomic
def alternatives_request(*, trace: Trace, step_index: Any, actor: Any, k: Any = None, temperature: Any = None,
                         seed: Any = None) -> AlternativeSet:
    """Queue K candidates for step ``step_index`` (a closed step of the trace): the prefix is the
    steps before it. ``temperature`` defaults to the trace's (1.0 when the trace was greedy);
    ``seed`` to a random one, stored so the same candidates can be drawn again."""
    step_index = _int(step_index, "step_index", "bad_step", 0, 10**6)
    k = DEFAULT_K if k is None else _int(k, "k", "bad_k", 1, MAX_K)
    # Below 2**53: a seed must survive a round trip through JavaScript numbers (the UI shows it).
    seed = random.randrange(2**53) if seed is None else _int(seed, "seed", "invalid", 0, 2**53 - 1)
    params = dict(trace.sampling_params or {})
    if temperature is None:
        temperature = params.get("temperature") or DEFAULT_TEMPERATURE
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature)
            or not 0 < temperature <= MAX_TEMPERATURE):
        raise InvalidInput(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}].", code="invalid")
    locked = Trace.objects.select_for_update().get(pk=trace.pk)
    closed = locked.steps.count()
    if step_index >= closed:
        raise NotFound(f"Trace {locked.pk} has no closed step {step_index} (it has {closed}).", code="unknown_step")
    if AlternativeSet.objects.filter(trace=locked, status__in=IN_FLIGHT).count() >= IN_FLIGHT_PER_TRACE:
        raise Conflict(f"{IN_FLIGHT_PER_TRACE} sets of alternatives are already being sampled for this trace; "
                       "wait for them.", code="busy")
    alt = AlternativeSet.objects.create(
        trace=locked, step_index=step_index, k=k, seed=seed, created_by=actor,
        params={"temperature": float(temperature), "top_p": params.get("top_p", 1.0), "max_new_tokens": STEP_TOKENS},
    )
    audit_record(project=locked.project, actor=actor, action="alternatives.requested", target=alt,
                 data={"trace": locked.pk, "step": step_index, "k": k, "seed": seed})
    enqueue_on_commit(GENERATE_ALTERNATIVES, set_id=alt.pk)
    transaction.on_commit(partial(_announce, alt.pk))
    return alt


# --- the worker side ------------------------------------------------------------------------------


def _claim(set_id: int, owner: str) -> tuple[AlternativeSet, flags.AlternativesHeartbeat] | None:
    with transaction.atomic():
        alt = AlternativeSet.objects.select_for_update().filter(pk=set_id).first()
        if alt is None or alt.status != AlternativesStatus.QUEUED:
            return None
        heartbeat = flags.AlternativesHeartbeat(set_id, owner, ttl_s=settings.GENERATE_HEARTBEAT_S)
        heartbeat.claim()
        alt.status = AlternativesStatus.RUNNING
        alt.save(update_fields=["status"])
    return alt, heartbeat.start()


def alternatives_generate(*, set_id: int, owner: str = "") -> None:
    """Sample and score one set. Idempotent: only a queued set is picked up. Every set this claims
    ends ``ready`` or ``failed`` (with the reason in ``error``), whatever raises on the way."""
    claimed = _claim(set_id, f"{owner or 'worker'}:{uuid.uuid4().hex}")
    if claimed is None:
        return
    alt, heartbeat = claimed
    try:
        _announce(set_id)  # sampling
        candidates = _sample_and_score(alt)
        AlternativeSet.objects.filter(pk=set_id, status=AlternativesStatus.RUNNING).update(
            status=AlternativesStatus.READY, candidates=candidates, ready_at=timezone.now())
    except Exception as exc:
        log.exception("alternatives %s failed", set_id)
        error = exc.public if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {exc}"
        _fail(set_id, error)
    finally:
        heartbeat.release()
    try:
        _announce(set_id)
    except Exception:
        log.exception("could not announce alternatives %s", set_id)


def _fail(set_id: int, error: str) -> None:
    from annotator.services.generation import storable_text

    AlternativeSet.objects.filter(pk=set_id, status__in=IN_FLIGHT).update(
        status=AlternativesStatus.FAILED, error=storable_text(error)[:2000])


def _sample_and_score(alt: AlternativeSet) -> list[dict[str, Any]]:
    from annotator.services.generation import _request_for, backend_for, storable_text

    trace = Trace.objects.select_related("prompt", "project", "model_version").get(pk=alt.trace_id)
    model = trace.model_version or trace.project.serving_model
    if model is None:
        raise GenerationError("the project has no serving model")
    prefix = list(trace.steps.filter(index__lt=alt.step_index).order_by("index").values_list("text", flat=True))
    base = _request_for(trace, prefix)
    # Always a rendered prefix, even an empty one ("<think>\n"): every sample starts inside the think block.
    request = GenerationRequest(messages=base.messages, images=base.images, prefix=render_prefix(prefix),
                                params=SamplingParams.from_dict({**alt.params, "seed": alt.seed}))
    samples = backend_for(model).sample_steps(request, n=alt.k, rule=trace.project.step_rule, prefix_steps=prefix)
    plan = supervision.project_supervision(trace.project)
    scorers = supervision.Scorers(plan.scorers, trace.prompt.messages) if plan.scorers else None
    out = []
    for i, sample in enumerate(samples):
        text = storable_text(sample.next.text)
        scores = []
        if scorers and sample.next.kind == "step" and text:
            scores = [{"scorer": sc.scorer, "score": sc.score, "detail": sc.detail[:500],
                       "model_version": sc.model_version_id} for sc in scorers.score([*prefix, text])]
        out.append({"index": i, "kind": sample.next.kind, "text": text, "scores": scores})
    return out


class AlternativesSweep(HeartbeatSweep):
    """Ends sets whose sampling worker is gone (``running`` with no heartbeat) ``failed``, after
    ``grace_s`` (the same grace as the trace sweep: annotator/sweep.py)."""

    def __init__(self, *, grace_s: float) -> None:
        super().__init__(
            grace_s=grace_s,
            in_flight=lambda: AlternativeSet.objects.filter(status=AlternativesStatus.RUNNING)
            .values_list("pk", flat=True),
            alive=flags.alternatives_owners_alive,
            end=self._end,
        )

    @staticmethod
    def _end(set_id: int) -> bool:
        with transaction.atomic():
            alt = AlternativeSet.objects.select_for_update().filter(
                pk=set_id, status=AlternativesStatus.RUNNING).first()
            if alt is None or flags.alternatives_owners_alive([set_id])[set_id]:
                return False
            alt.status = AlternativesStatus.FAILED
            alt.error = "The generate worker sampling these alternatives was lost (its heartbeat stopped); ask again."
            alt.save(update_fields=["status", "error"])
            transaction.on_commit(partial(_announce, set_id))
        log.warning("alternatives %s: the sampling worker was lost; ended failed", set_id)
        return True


# --- the pick -------------------------------------------------------------------------------------


@transaction.atomic
def alternatives_pick(*, alt_set: AlternativeSet, actor: Any, expected_version: Any, candidate: Any = None,
                      text: Any = None) -> AlternativeSet:
    """Pick candidate ``candidate`` (its index) or write ``text``. A step that differs from the
    trace's own step k becomes a branch (``correction_create``: steps 0..k-1 shared, the picked step
    k, then the model continues); picking the trace's own step keeps it (no branch). Either way the
    choice is stored: the picked step is preferred over every other candidate."""
    from annotator.services.corrections import MAX_STEP_CHARS, correction_create

    if (candidate is None) == (text is None):
        raise InvalidInput("Give either candidate (the index of one) or text (your own step).", code="invalid")
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise InvalidInput("expected_version (the trace version you saw) must be an integer.", code="bad_version")
    alt = AlternativeSet.objects.select_for_update().get(pk=alt_set.pk)
    if alt.is_picked:
        raise Conflict("A step was already picked from these alternatives; ask for new ones.", code="already_picked",
                       details={"picked": alt.picked, "branch": alt.branch_id})
    if alt.status != AlternativesStatus.READY:
        raise Conflict(f"These alternatives are {alt.status}, not ready to pick from.", code="not_ready")
    origin = StepOrigin.MODEL
    if candidate is not None:
        if isinstance(candidate, bool) or not isinstance(candidate, int):
            raise InvalidInput("candidate must be the integer index of a candidate.", code="invalid")
        chosen = next((c for c in alt.candidates if c["index"] == candidate), None)
        if chosen is None:
            raise NotFound(f"There is no candidate {candidate} (they are 0 to {len(alt.candidates) - 1}).",
                           code="unknown_candidate")
        if chosen["kind"] != "step" or not chosen["text"]:
            why = "ends the reasoning" if chosen["kind"] == "end" else "was cut off before its step ended"
            raise Conflict(f"Candidate {candidate} {why}: it has no step to pick.", code="not_a_step")
        new_text = chosen["text"]
    else:
        if not isinstance(text, str):
            raise InvalidInput("text must be a string.")
        new_text = text.strip()
        if not new_text:
            raise InvalidInput("Your step needs text.", code="empty_step")
        if "\n" in new_text or len(new_text) > MAX_STEP_CHARS:
            raise InvalidInput(f"A step is one line of at most {MAX_STEP_CHARS} characters.", code="bad_step")
        origin = StepOrigin.HUMAN
    trace = Trace.objects.select_for_update().get(pk=alt.trace_id)
    if trace.version != expected_version:
        raise Conflict(
            f"Trace {trace.pk} changed since you saw it (your version {expected_version}, now {trace.version}). "
            "Reload it and pick again; nothing was changed.",
            code="stale_version", details={"current_version": trace.version})
    own = trace.steps.filter(index=alt.step_index).values_list("text", flat=True).first()
    if own is None:
        raise NotFound(f"Trace {trace.pk} has no step {alt.step_index} any more.", code="unknown_step")
    branch_id = None
    if new_text != own:
        correction: Correction = correction_create(
            trace=trace, step_index=alt.step_index, text=new_text, author=actor, expected_version=expected_version,
            reason=f"picked from alternatives {alt.pk}" + ("" if origin == StepOrigin.MODEL else " (own text)"),
            origin=origin)
        branch_id = correction.corrected_trace_id
    alt.picked = candidate
    alt.picked_text = new_text
    alt.picked_by = actor
    alt.picked_at = timezone.now()
    alt.branch_id = branch_id
    alt.save(update_fields=["picked", "picked_text", "picked_by", "picked_at", "branch"])
    audit_record(project=trace.project, actor=actor, action="alternatives.picked", target=alt,
                 data={"trace": trace.pk, "step": alt.step_index, "candidate": candidate, "text": new_text,
                       "branch": branch_id})
    transaction.on_commit(partial(_announce, alt.pk))
    return alt
