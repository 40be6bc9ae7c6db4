"""Generation of traces: create/start/stop/continue (called by REST and websocket alike), and the
worker side `trace_generate`, which streams from the backend into steps and events."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotator import answers, events, flags, supervision
from annotator.enqueue import GENERATE_TRACE, enqueue_on_commit
from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.generation import guided
from annotator.generation.backends import GenerationError, GenerationRequest, SamplingParams
from annotator.generation.factory import make_backend
from annotator.generation.steps import ClosedStep, StepSegmenter
from annotator.models import (
    Backend,
    Correction,
    ModelVersion,
    Project,
    Prompt,
    Step,
    StepOrigin,
    StepScore,
    Trace,
    TraceMode,
    TraceStatus,
)
from annotator.services.audit import audit_record
from annotator.sweep import HeartbeatSweep
from trainer_worker.training.heldout import user_text
from trainer_worker.vocabulary.format import THINK_CLOSE, render_prefix

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.020  # a token waits at most this long before it is sent
# bench/streaming.py sets this so that token events carry the wall time each delta left the backend.
TRACE_TIMING = os.environ.get("SAFELADDER_TRACE_TIMING") == "1"
STOP_POLL_S = 0.050  # a stop request is seen within this (the target is 0.5 s)


def _params(project: Project, given: Any) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidInput("sampling_params must be an object.")
    merged = {**(project.generation_defaults or {}), **given}
    try:
        return SamplingParams.from_dict(merged).to_dict()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Bad sampling parameters: {exc}", code="invalid") from None


def trace_status_event(trace: Trace) -> None:
    events.publish_trace_event(
        trace.pk,
        "trace.status",
        status=trace.status,
        finish_reason=trace.finish_reason,
        final_answer=trace.final_answer,
        version=trace.version,
        error=trace.error,
        mode=trace.mode,
        pause_reason=trace.pause_reason,
    )


@transaction.atomic
def trace_create(
    *,
    project: Project,
    prompt: Prompt,
    actor: Any,
    model_version: ModelVersion | None = None,
    sampling_params: Any = None,
    mode: Any = None,
    pace_tps: Any = None,
    guide: Any = None,
) -> Trace:
    """A new trace for a prompt, queued; generation starts when the transaction commits. ``mode``
    and ``pace_tps`` default to the project's supervision settings (annotator/supervision.py).

    ``guide`` ({"k", "by"}): guided generation without a human, each step the best of k sampled
    candidates by a scorer (``_generate_guided``). It runs live (nobody waits at its steps), samples
    (k identical greedy candidates would choose nothing), and is seeded: without a seed it gets one,
    stored with the trace, so the run can be repeated."""
    if prompt.project_id != project.pk:
        raise NotFound("Prompt not found.")
    model = model_version or project.serving_model
    if model is None:
        raise InvalidInput("The project has no serving model; set one or name a model_version.", code="no_model")
    if model.project_id != project.pk:
        raise NotFound("Model version not found.")
    params = _params(project, sampling_params)
    defaults = supervision.project_supervision(project)
    guided = None
    if guide is not None:
        guided = supervision.guide_check(guide, project_id=project.pk, prompt_text=user_text(prompt.messages))
        if mode not in (None, TraceMode.LIVE):
            raise InvalidInput("A guided trace picks its own steps, at the model's pace: its mode is live.",
                               code="bad_mode")
        mode = TraceMode.LIVE
        if guided.k > 1 and params["temperature"] == 0:
            raise InvalidInput("Guided generation samples its candidates: give a temperature above 0 (greedy "
                               "candidates would all be the same).", code="bad_guide")
        if params.get("seed") is None:
            params["seed"] = secrets.randbelow(2**31)
    mode = defaults.mode if mode is None else supervision.mode_check(mode)
    pace_tps = defaults.pace_tps if pace_tps is None else supervision.pace_check(pace_tps)
    trace = Trace.objects.create(
        project=project,
        prompt=prompt,
        model_version=model,
        sampling_params=params,
        seed=params.get("seed"),
        mode=mode,
        pace_tps=pace_tps if mode == TraceMode.PACED else None,
        guide=None if guided is None else guided.as_json(),
        status=TraceStatus.QUEUED,
        created_by=actor,
    )
    audit_record(
        project=project,
        actor=actor,
        action="trace.created",
        target=trace,
        data={"prompt": prompt.pk, "model_version": model.pk, "params": params, "mode": mode,
              **({"guide": guided.as_json()} if guided else {})},
    )
    enqueue_on_commit(GENERATE_TRACE, trace_id=trace.pk)
    transaction.on_commit(lambda: _tell_queue(trace))
    return trace


def _tell_queue(trace: Trace) -> None:
    """Open queue pages hear of a new trace and of one that ended (annotator/project_consumer.py)."""
    events.publish_project_event(trace.project_id, "queue.trace", trace=trace.pk, prompt=trace.prompt_id,
                                 status=trace.status)


@transaction.atomic
def trace_start(*, trace: Trace, actor: Any, sampling_params: Any = None) -> Trace:
    locked = Trace.objects.select_for_update().get(pk=trace.pk)
    if locked.status != TraceStatus.QUEUED:
        raise Conflict(f"Only a queued trace can be started; this one is {locked.status}.", code="bad_state")
    if sampling_params is not None:
        locked.sampling_params = _params(locked.project, sampling_params)
        if locked.guide:  # the guided trace's rules of trace_create hold for new parameters too
            if locked.guide.get("k", 1) > 1 and locked.sampling_params["temperature"] == 0:
                raise InvalidInput("Guided generation samples its candidates: give a temperature above 0.",
                                   code="bad_guide")
            if locked.sampling_params.get("seed") is None:
                locked.sampling_params["seed"] = locked.seed if locked.seed is not None else secrets.randbelow(2**31)
        locked.seed = locked.sampling_params.get("seed")
        locked.save(update_fields=["sampling_params", "seed", "updated_at"])
    audit_record(project=locked.project, actor=actor, action="trace.started", target=locked)
    enqueue_on_commit(GENERATE_TRACE, trace_id=locked.pk)
    return locked


@transaction.atomic
def trace_stop(*, trace: Trace, actor: Any) -> Trace:
    """Stop generating. A queued trace is ``stopped`` at once. A running one becomes ``stopping``,
    and the worker ends it ``stopped`` within half a second (or ``finished``, when the model had
    finished before the stop reached it). A second stop of a stopping trace changes nothing. A
    stop that arrives after the trace ended (finished, failed, stopped or paused) is refused with
    ``already_finished``: nothing was stopped, and the supervisor is told so."""
    locked = Trace.objects.select_for_update().get(pk=trace.pk)
    if locked.status == TraceStatus.STOPPING:
        return locked
    if locked.status in (TraceStatus.FINISHED, TraceStatus.FAILED, TraceStatus.STOPPED):
        paused = " (paused: continue it to go on)" if locked.status == TraceStatus.STOPPED else ""
        raise Conflict(
            f"The trace had already ended ({locked.status}{paused}) when the stop arrived; nothing was stopped.",
            code="already_finished",
            details={"status": locked.status, "finish_reason": locked.finish_reason},
        )
    if locked.status not in (TraceStatus.RUNNING, TraceStatus.QUEUED):
        raise Conflict(f"The trace is not generating (it is {locked.status}).", code="bad_state")
    flags.raise_stop_on_commit(locked.pk)
    audit_record(project=locked.project, actor=actor, action="trace.stopped", target=locked)
    if locked.status == TraceStatus.QUEUED:
        # Not picked up yet: stop it here; the worker will find it stopped and do nothing.
        locked.status, locked.finish_reason = TraceStatus.STOPPED, "cancelled"
        locked.save(update_fields=["status", "finish_reason", "updated_at"])
    else:
        locked.status = TraceStatus.STOPPING
        locked.save(update_fields=["status", "updated_at"])
    transaction.on_commit(partial(trace_status_event, locked))
    return locked


@transaction.atomic
def trace_continue(*, trace: Trace, actor: Any, mode: Any = None) -> Trace:
    """Continue a stopped or paused trace from its closed steps (in step mode: accept the step and
    write the next). ``mode`` switches the mode as it continues (``live``: run to the end)."""
    locked = Trace.objects.select_for_update().get(pk=trace.pk)
    if locked.status != TraceStatus.STOPPED:
        raise Conflict(f"Only a stopped trace can continue; this one is {locked.status}.", code="bad_state")
    if mode is not None:
        locked.mode = supervision.mode_check(mode)
        if locked.mode == TraceMode.PACED and locked.pace_tps is None:
            locked.pace_tps = supervision.project_supervision(locked.project).pace_tps
    locked.status, locked.finish_reason, locked.pause_reason = TraceStatus.QUEUED, "", ""
    locked.save(update_fields=["status", "finish_reason", "pause_reason", "mode", "pace_tps", "updated_at"])
    audit_record(project=locked.project, actor=actor, action="trace.continued", target=locked,
                 data={"mode": locked.mode})
    transaction.on_commit(lambda: trace_status_event(locked))
    enqueue_on_commit(GENERATE_TRACE, trace_id=locked.pk)
    return locked


def branch_start(*, correction: Correction) -> None:
    """Called by ``correction_create`` in its transaction: once it commits, the original trace's
    viewers hear of the new branch and the branch starts generating from the corrected prefix."""
    transaction.on_commit(partial(_announce_branch, correction.pk))
    enqueue_on_commit(GENERATE_TRACE, trace_id=correction.corrected_trace_id)


def _announce_branch(correction_id: int) -> None:
    correction = Correction.objects.select_related("author", "corrected_trace").get(pk=correction_id)
    branch = correction.corrected_trace
    events.publish_trace_event(
        correction.original_trace_id,
        "branch.created",
        branch={"id": branch.pk, "branch_step_index": branch.branch_step_index, "status": branch.status},
        correction={
            "id": correction.pk,
            "step_index": correction.step_index,
            "old_text": correction.old_text,
            "new_text": correction.new_text,
            "author": {"id": correction.author_id, "username": getattr(correction.author, "username", "")},
        },
        version=Trace.objects.values_list("version", flat=True).get(pk=correction.original_trace_id),
    )


# --- the worker side ------------------------------------------------------------------------------

_vllm_clients: dict[tuple[str, str], Any] = {}


def backend_for(model: ModelVersion):
    """The backend that serves `model`, after checking again that its URL and paths are allowed (the
    settings may have changed since the version was saved); GenerationError when they are not."""
    from annotator.outbound import model_version_check

    try:
        model_version_check(model)
    except InvalidInput as exc:
        raise GenerationError(exc.message) from None
    if model.backend == Backend.VLLM:
        base_url = model.backend_options.get("base_url") or settings.VLLM_BASE_URL
        served = model.backend_options.get("served_name") or (model.name if model.adapter_path else model.base_model)
        key = (base_url, served)
        if key not in _vllm_clients:
            _vllm_clients[key] = make_backend("vllm", base_url=base_url, model=served)
        return _vllm_clients[key]
    path = model.path or model.base_model
    return make_backend("local", model_path=path)


def _request_for(trace: Trace, prefix_steps: list[str]) -> GenerationRequest:
    images = tuple(Path(img.file.path).read_bytes() for img in trace.prompt.images.order_by("position"))
    params = SamplingParams.from_dict(trace.sampling_params or {})
    return GenerationRequest(
        messages=trace.prompt.messages,
        images=images,
        prefix=render_prefix(prefix_steps) if prefix_steps else "",
        params=params,
    )


class TokenBatcher:
    """Collects text deltas and publishes them so that no token waits more than BATCH_WAIT_S."""

    def __init__(self, trace_id: int, segmenter: StepSegmenter) -> None:
        self.trace_id = trace_id
        self.segmenter = segmenter
        self.lock = threading.Lock()
        self.pending: list[str] = []
        self.yield_ts: list[float] = []
        self.timer: threading.Timer | None = None
        self.last_flush = 0.0

    def push(self, text: str) -> list[ClosedStep]:
        """Feed a delta to the segmenter and queue it. A delta that closes steps is sent at once,
        so the token event carrying a step's last characters precedes that step's event."""
        with self.lock:  # the timer thread reads the segmenter's state in _flush_locked
            closed = self.segmenter.feed(text)
            self.pending.append(text)
            if TRACE_TIMING:
                self.yield_ts.append(time.time())
            # Leading edge: a token after a quiet spell goes out at once; within BATCH_WAIT_S of the
            # last send, tokens wait together (never longer than BATCH_WAIT_S) for one message.
            wait = self.last_flush + BATCH_WAIT_S - time.monotonic()
            if closed or (wait <= 0 and self.timer is None):
                self._flush_locked()
            elif self.timer is None:
                self.timer = threading.Timer(max(0.0, wait), self.flush)
                self.timer.daemon = True
                self.timer.start()
        return closed

    def finish(self) -> tuple[list[ClosedStep], str | None]:
        with self.lock:
            self._flush_locked()
            return self.segmenter.finish()

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        self.last_flush = time.monotonic()
        text = "".join(self.pending)
        self.pending.clear()
        timing = {"yield_ts": self.yield_ts, "pub_ts": time.time()} if TRACE_TIMING else {}
        self.yield_ts = []
        events.publish_trace_event(
            self.trace_id,
            "trace.token",
            text=text,
            phase=self.segmenter.phase,
            partial=self.segmenter.partial,
            answer=self.segmenter.answer_so_far,
            **timing,
        )


def _save_step(trace: Trace, index: int, text: str, guide: dict[str, Any] | None = None) -> Step:
    step = Step.objects.create(trace=trace, index=index, text=text, origin=StepOrigin.MODEL, guide=guide)
    events.publish_trace_event(trace.pk, "trace.step", step=step_event(step))
    return step


def step_event(step: Step) -> dict[str, Any]:
    """The ``step`` of a ``trace.step`` event for a step the model just wrote."""
    return {"id": step.pk, "index": step.index, "text": step.text, "origin": step.origin, "labels": [],
            "guide": step.guide}


def steps_save(rows: list[tuple[Trace, int, str]]) -> list[Step]:
    """Model-written steps of (possibly) many traces in one INSERT (the relay hub batches them)."""
    return Step.objects.bulk_create(
        [Step(trace=trace, index=index, text=text, origin=StepOrigin.MODEL) for trace, index, text in rows]
    )


GENERATING = (TraceStatus.RUNNING, TraceStatus.STOPPING)


def storable_text(text: str) -> str:
    """Model output as PostgreSQL can hold it: NUL (which text columns refuse) and lone surrogates
    (which UTF-8 cannot encode) become U+FFFD; everything else is kept as the model wrote it."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Pairs of surrogates become their character; a lone one becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _claim(trace_id: int, owner: str) -> tuple[Trace, flags.TraceHeartbeat] | None:
    """Take a queued trace: ``running``, with a heartbeat key set (not yet renewed: the caller
    starts the heartbeat's thread, or the relay hub renews it)."""
    with transaction.atomic():
        trace = Trace.objects.select_for_update().filter(pk=trace_id).first()
        if trace is None or trace.status != TraceStatus.QUEUED:
            return None
        heartbeat = flags.TraceHeartbeat(trace_id, owner, ttl_s=settings.GENERATE_HEARTBEAT_S)
        heartbeat.claim()  # before the commit: the sweep never sees this trace running without an owner
        trace.status, trace.error, trace.finish_reason = TraceStatus.RUNNING, "", ""
        trace.save(update_fields=["status", "error", "finish_reason", "updated_at"])
        # Cleared before the claim commits: a stop that sees this trace running raises its flag
        # after the commit (flags are raised on commit), so it can never be wiped by this clear.
        flags.clear_stop(trace_id)
    return trace, heartbeat


def trace_generate(*, trace_id: int, owner: str = "") -> None:
    """Run one generation to its end (or stop), in this thread. Idempotent: only a queued trace is
    picked up.

    Every trace this claims ends ``finished``, ``stopped`` or ``failed``: any error on the way
    (the backend, the database, Redis, a bug) fails the trace with its reason in ``error``. A
    heartbeat says this process still holds it; if the process dies, ``traces_sweep`` ends it.
    (The generate worker relays vLLM streams on one event loop instead: annotator/services/relay.py.)"""
    claimed = _claim(trace_id, owner_token(owner))
    if claimed is None:
        return
    trace, heartbeat = claimed
    heartbeat.start()
    try:
        trace_status_event(trace)
        _generate(trace_id)
    except Exception as exc:
        log.exception("generation of trace %s failed", trace_id)
        _fail(trace_id, failure_text(exc))
    finally:
        heartbeat.release()
        with contextlib.suppress(Exception):
            flags.clear_stop(trace_id)


def owner_token(owner: str) -> str:
    return f"{owner or 'worker'}:{uuid.uuid4().hex}"


def failure_text(exc: BaseException) -> str:
    # A backend's error says what failed without what a remote server answered (see GenerationError).
    return exc.public if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {exc}"


def _fail(trace_id: int, error: str, *, statuses: tuple[str, ...] = GENERATING) -> bool:
    """End a trace that is in one of ``statuses`` (generating, by default) ``failed`` with
    ``error``, and tell its viewers; False when it was not in them. If even this cannot reach the
    database, the released heartbeat lets ``traces_sweep`` end it once the database is back."""
    try:
        ended = Trace.objects.filter(pk=trace_id, status__in=statuses).update(
            status=TraceStatus.FAILED,
            error=storable_text(error)[:2000],
            finish_reason="error",
            updated_at=timezone.now(),
        )
        if ended:
            trace = Trace.objects.get(pk=trace_id)
            trace_status_event(trace)
            _tell_queue(trace)
        return bool(ended)
    except Exception:
        log.exception("could not record the failure of trace %s", trace_id)
        return False


def _wait_until(deadline: float, stop_seen: Any) -> None:
    """Paced mode: hold the next delta until its time, seeing a stop within STOP_POLL_S."""
    while not stop_seen():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, STOP_POLL_S))


def _score(trace: Trace, step: Step | None, index: int, scorers: supervision.Scorers, steps: list[str],
           answer: str | None = None) -> list[supervision.Score]:
    """Score a closed step (or the answer), store the scores as machine labels, tell the viewers."""
    scores = scorers.score(steps, answer)
    if not scores:
        return []
    StepScore.objects.bulk_create(
        [StepScore(trace=trace, step=step, step_index=index, scorer=sc.scorer, model_version_id=sc.model_version_id,
                   score=sc.score, detail=sc.detail[:500]) for sc in scores],
        update_conflicts=True, unique_fields=["trace", "step_index", "scorer"],
        update_fields=["step", "score", "detail", "model_version"],
    )
    events.publish_trace_event(trace.pk, "trace.score", scores=[
        {"step_index": index, "scorer": sc.scorer, "score": sc.score, "detail": sc.detail,
         "model_version": sc.model_version_id} for sc in scores
    ])
    return scores


def _scorer_title(name: str) -> str:
    return "the rule checker (rule-based)" if name == supervision.RULE_SCORER else name


class Generation:
    """One streamed (not guided) generation of a trace, from its claim to its end: what the relay
    loop needs besides the stream itself. The thread relay (``_generate``) and the event-loop
    relay (annotator/services/relay.py) both drive it, so they store, score, pause and end a trace
    the same way. ``closed`` and ``end`` touch the database: the event-loop relay runs them in its
    bounded thread pool, never on the loop."""

    def __init__(self, trace_id: int) -> None:
        trace = Trace.objects.select_related("prompt", "project", "model_version").get(pk=trace_id)
        self.trace = trace
        self.prefix_steps = list(trace.steps.order_by("index").values_list("text", flat=True))
        self.guided = bool(trace.guide)
        if self.guided:
            return  # _generate_guided sets up its own
        self.segmenter = StepSegmenter(trace.project.step_rule, prefix_steps=self.prefix_steps)
        plan = supervision.project_supervision(trace.project)
        self.scorers = supervision.Scorers(plan.scorers, trace.prompt.messages) if plan.scorers else None
        self.pace = trace.pace_tps if trace.mode == TraceMode.PACED and trace.pace_tps else None
        self.pause_below = plan.pause_below
        if self.pause_below is not None and StepScore.objects.filter(trace=trace, score__lt=self.pause_below).exists():
            # Continued after a low score: the supervisor chose to go on, so it does not pause again (every
            # step after a wrong one scores low too). A branch starts without scores and can pause afresh.
            self.pause_below = None
        self.stopped = False  # a stop request was seen (it stays seen)
        # Why this generation pauses itself ("": it does not) and how: "step" (step mode) or "auto_pause".
        self.pause_reason = ""
        self.pause_kind = ""
        self.steps = list(self.prefix_steps)
        self.finish_reason, self.prompt_tokens, self.completion_tokens = "stop", 0, 0

    def model(self) -> ModelVersion:
        model = self.trace.model_version or self.trace.project.serving_model
        if model is None:
            raise GenerationError("the project has no serving model")
        return model

    def request(self) -> GenerationRequest:
        return _request_for(self.trace, self.prefix_steps)

    def should_stop(self) -> bool:
        """For the backend: stop reading (a pause or a stop). The thread relay polls the flag first."""
        return bool(self.pause_reason) or self.stopped

    def deliverable(self, text: str) -> bool:
        """After a pause or a stop, what the model wrote on is not delivered (only closed steps count)."""
        return bool(text) and not self.pause_reason and not self.stopped

    def finished(self, delta: Any) -> None:
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
            self.prompt_tokens = delta.prompt_tokens or 0
            self.completion_tokens = delta.completion_tokens or 0

    def closed(self, step: ClosedStep) -> None:
        """A step closed: save it (viewers get ``trace.step``), score it, pause if it says so."""
        self.saved(step, _save_step(self.trace, step.index, step.text))

    def saved(self, step: ClosedStep, saved: Step) -> None:
        """After a closed step is saved and announced: score it (database work when there are
        scorers), pause if it says so."""
        trace = self.trace
        self.steps.append(step.text)
        for sc in _score(trace, saved, step.index, self.scorers, self.steps) if self.scorers else []:
            if self.pause_below is not None and sc.score < self.pause_below and self.pause_kind != "auto_pause":
                self.pause_kind = "auto_pause"
                self.pause_reason = (
                    f"Paused: {_scorer_title(sc.scorer)} scored step {step.index + 1} {sc.score:.2f}, below the "
                    f"project's threshold {self.pause_below:.2f} ({sc.detail})."
                )
        if trace.mode == TraceMode.STEP and not self.pause_reason:
            self.pause_kind = "step"
            self.pause_reason = f"Step mode: step {step.index + 1} is written; accept it, edit it or ask for more."

    def outcome(self) -> tuple[str, bool]:
        """(status, whether the rest of the text is closed as steps and an answer)."""
        if self.stopped or (self.finish_reason == "cancelled" and not self.pause_reason):
            return TraceStatus.STOPPED, False  # the step being written when the stop came is dropped
        if self.pause_reason:
            return TraceStatus.STOPPED, False
        return TraceStatus.FINISHED, True

    def end(self, remaining: list[ClosedStep], answer: str | None) -> None:
        """Close what is left (when finished), score the answer, record how it ended."""
        status, complete = self.outcome()
        finish_reason, pause_reason = self.finish_reason, ""
        if not complete:
            answer = None
            if self.stopped or not self.pause_reason:
                finish_reason = "cancelled"
            else:
                finish_reason, pause_reason = self.pause_kind, self.pause_reason
        else:
            for step in remaining:
                self.closed(step)
            if self.scorers and answer is not None:
                _score(self.trace, None, supervision.ANSWER_INDEX, self.scorers, self.steps, answer)
        _end(self.trace, status=status, finish_reason=finish_reason, answer=answer, pause_reason=pause_reason,
             prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


def _generate(trace_id: int) -> None:
    gen = Generation(trace_id)
    if gen.guided:
        _generate_guided(gen.trace, gen.prefix_steps)
        return
    batcher = TokenBatcher(trace_id, gen.segmenter)
    last_poll = [0.0]

    def stop_seen() -> bool:
        now = time.monotonic()
        if not gen.stopped and now - last_poll[0] >= STOP_POLL_S:
            last_poll[0] = now
            try:
                gen.stopped = flags.stop_requested(trace_id)
            except Exception:  # Redis away for a moment (a restart): keep generating, ask again later
                log.warning("stop flag of trace %s unreadable; asking again", trace_id, exc_info=True)
        return gen.stopped

    def should_stop() -> bool:
        stop_seen()
        return gen.should_stop()

    delivered, started = 0, time.monotonic()
    try:
        backend = backend_for(gen.model())
        for delta in backend.stream(gen.request(), should_stop=should_stop):
            if gen.deliverable(delta.text):
                if gen.pace:
                    delivered += 1
                    _wait_until(started + delivered / gen.pace, stop_seen)
                if not gen.stopped:
                    for step in batcher.push(storable_text(delta.text)):
                        gen.closed(step)
            gen.finished(delta)
    finally:
        batcher.flush()  # what the model wrote before an error still reaches the viewers
    remaining, answer = batcher.finish() if gen.outcome()[1] else ([], None)
    gen.end(remaining, answer)


def _end(trace: Trace, *, status: str, finish_reason: str, answer: str | None, pause_reason: str,
         prompt_tokens: int, completion_tokens: int) -> None:
    """Record how a generation ended (unless the sweep ended it first) and tell viewers and queues.
    The answer is checked against the prompt's reference for the queue's confident_wrong order (its
    change voided the verdict: annotator/answers.py)."""
    ended = Trace.objects.filter(pk=trace.pk, status__in=GENERATING).update(
        status=status,
        finish_reason=finish_reason,
        final_answer=answer,
        pause_reason=pause_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=trace.completion_tokens + completion_tokens,
        updated_at=timezone.now(),
    )
    if ended:
        answers.verdicts_fill(trace_id=trace.pk)
    trace.refresh_from_db()
    trace_status_event(trace)
    _tell_queue(trace)


def _generate_guided(trace: Trace, prefix_steps: list[str]) -> None:
    """A guided trace (annotator/generation/guided.py): each step is the best of k sampled candidates
    by the trace's guide. Viewers get each kept step as a ``trace.token`` and a ``trace.step`` (with
    the candidates it beat), then the answer streams as usual. A stop is seen between steps and
    within the answer; the project's scorers and auto-pause apply to the kept steps as to any
    others (the guide's own score is stored too), and step mode does not apply (nobody waits)."""
    guide = supervision.Guide(k=int(trace.guide["k"]), by=str(trace.guide["by"]))
    messages = trace.prompt.messages
    plan = supervision.project_supervision(trace.project)
    scorers = supervision.Scorers(tuple(dict.fromkeys((guide.by, *plan.scorers))), messages)
    judge = supervision.guide_score_fn(guide.by, messages)
    pause_below = plan.pause_below
    if pause_below is not None and StepScore.objects.filter(trace=trace, score__lt=pause_below).exists():
        pause_below = None  # continued after a low score: as in _generate, it does not pause again
    stopped = [False]
    last_poll = [0.0]

    def stop_seen() -> bool:
        now = time.monotonic()
        if not stopped[0] and now - last_poll[0] >= STOP_POLL_S:
            last_poll[0] = now
            try:
                stopped[0] = flags.stop_requested(trace.pk)
            except Exception:  # Redis away for a moment: keep generating, ask again later
                log.warning("stop flag of trace %s unreadable; asking again", trace.pk, exc_info=True)
        return stopped[0]

    model = trace.model_version or trace.project.serving_model
    if model is None:
        raise GenerationError("the project has no serving model")
    backend = backend_for(model)
    request = _request_for(trace, prefix_steps)
    budget, rule = request.params.max_new_tokens, trace.project.step_rule
    steps = list(prefix_steps)
    used, prompt_tokens, finish_reason, pause_reason, answering = 0, 0, "stop", "", True
    picks = guided.guided_steps(
        backend, request, k=guide.k, rule=rule, prefix_steps=list(steps), score=judge, seed=trace.seed,
        max_steps=max(0, guided.MAX_GUIDED_STEPS - len(prefix_steps)), should_stop=stop_seen,
    )
    for pick in picks:
        best = pick.best
        if best.next.kind == "end":
            break
        if best.next.kind == "incomplete":  # every candidate ran out of tokens inside the step
            finish_reason, answering = "length", False
            break
        text = storable_text(best.next.text)
        used += best.completion_tokens
        events.publish_trace_event(trace.pk, "trace.token", text=text + "\n", phase="think", partial="", answer="")
        saved = _save_step(trace, pick.index, text, guide=pick.as_json())
        steps.append(text)
        for sc in _score(trace, saved, pick.index, scorers, steps):
            if pause_below is not None and sc.score < pause_below and not pause_reason:
                pause_reason = (
                    f"Paused: {_scorer_title(sc.scorer)} scored step {pick.index + 1} {sc.score:.2f}, below the "
                    f"project's threshold {pause_below:.2f} ({sc.detail}), though it was the best of {guide.k}."
                )
        if pause_reason:
            answering = False
            break
        if used >= budget:
            finish_reason, answering = "length", False
            break
    answer = None
    if answering and not stop_seen():
        # The guide chose to end (or the step budget is spent): the think block closes and the model
        # writes its answer to the chosen chain, streamed like any other.
        batcher = TokenBatcher(trace.pk, StepSegmenter(rule, prefix_steps=steps))
        batcher.push(THINK_CLOSE + "\n")
        answer_request = guided.answer_request(request, steps, max_new_tokens=budget - used, seed=trace.seed)
        try:
            for delta in backend.stream(answer_request, should_stop=stop_seen):
                if delta.text and not stopped[0]:
                    batcher.push(storable_text(delta.text))
                if delta.finish_reason:
                    finish_reason = delta.finish_reason
                    prompt_tokens = delta.prompt_tokens or 0
                    used += delta.completion_tokens or 0
        finally:
            batcher.flush()
        if not stopped[0] and finish_reason != "cancelled":
            _rest, answer = batcher.finish()
            if answer is not None:
                _score(trace, None, supervision.ANSWER_INDEX, scorers, steps, answer)
    if stopped[0] or stop_seen():
        status, answer, finish_reason = TraceStatus.STOPPED, None, "cancelled"
    elif pause_reason:
        status, finish_reason = TraceStatus.STOPPED, "auto_pause"
    else:
        status = TraceStatus.FINISHED
    _end(trace, status=status, finish_reason=finish_reason, answer=answer, pause_reason=pause_reason,
         prompt_tokens=prompt_tokens, completion_tokens=used)


# --- lost generations -----------------------------------------------------------------------------


class TraceSweep(HeartbeatSweep):
    """Ends traces whose generating process is gone: ``running`` or ``stopping`` with no heartbeat.

    A trace is ended only after its heartbeat has been missing for ``grace_s`` on checks this
    sweep made itself: a live owner sets its key again every third of its lifetime, so a key that
    Redis lost (a restart) comes back before then. Idempotent and safe to run in several processes:
    each trace is re-read under a row lock and ended once. A ``stopping`` trace ends ``stopped`` (its
    supervisor asked for that; the closed steps are kept), a ``running`` one ``failed``."""

    def __init__(self, *, grace_s: float) -> None:
        super().__init__(
            grace_s=grace_s,
            in_flight=lambda: Trace.objects.filter(status__in=GENERATING).values_list("pk", flat=True),
            alive=flags.trace_owners_alive,
            end=lambda pk: _end_lost(pk, grace_s),
        )


def _end_lost(trace_id: int, grace_s: float) -> bool:
    with transaction.atomic():
        trace = Trace.objects.select_for_update().filter(pk=trace_id, status__in=GENERATING).first()
        if trace is None or flags.trace_owners_alive([trace_id])[trace_id]:
            return False
        kept = trace.steps.count()
        if trace.status == TraceStatus.STOPPING:
            trace.status, trace.finish_reason = TraceStatus.STOPPED, "cancelled"
        else:
            trace.status, trace.finish_reason = TraceStatus.FAILED, "worker_lost"
        trace.error = (
            f"The generate worker of this trace was lost (its heartbeat stopped); its {kept} closed step(s) are kept."
        )
        trace.save(update_fields=["status", "finish_reason", "error", "updated_at"])
        transaction.on_commit(partial(trace_status_event, trace))
        transaction.on_commit(partial(_tell_queue, trace))
    log.warning("trace %s: its generate worker was lost; ended %s", trace_id, trace.status)
    return True
