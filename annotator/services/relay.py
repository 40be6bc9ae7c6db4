"""The generate worker's relay hub: every vLLM stream of a worker process relayed on one asyncio
event loop, instead of one thread per trace.

In production the generate worker mostly relays: vLLM generates, the worker reads its SSE stream,
cuts it into steps and publishes token batches. With a thread per trace, 20 traces were 20 threads
taking turns on one GIL, and the tail of the token latency came from there (BENCHMARKS.md, "Live
streaming"). Here one thread runs one event loop, and each trace is a coroutine on it:

- the stream is read with an aiohttp session of the loop (``VLLMBackend.astream``), one wake-up per
  network read;
- token batches (the same leading-edge batching, at most ``BATCH_WAIT_S``) go out through the same
  store-and-publish Lua script, called with an asyncio Redis client (``events.apublish_trace_event``);
- what touches the database (saving a closed step, scoring it, ending the trace) runs in a small
  thread pool (``GENERATE_RELAY_DB_THREADS``, so at most that many database connections), never
  on the loop, and the trace's coroutine waits for it, so its events keep their order;
- one task renews the heartbeats of all the hub's traces in one Redis round trip, and one task
  reads all their stop flags in one round trip every ``STOP_POLL_S``.

What the rest of the studio relies on stays true: a trace is claimed (``running``, heartbeat set)
by the Celery task before it is handed over; a stop is seen within ``STOP_POLL_S`` of the next
token; any error ends the trace ``failed`` with its reason; if the process dies, the heartbeats
stop with it and the sweep ends its traces (``worker_lost``); a warm shutdown of the worker waits
up to ``GENERATE_RELAY_DRAIN_S`` for the hub's traces, then ends the rest ``failed`` with a reason.
The hub holds at most ``GENERATE_RELAY_MAX_TRACES`` traces; a task that finds it full waits, with
its trace still queued, so a worker never takes more than it relays.

Local (torch) backends, guided traces and alternatives keep their threads (``trace_generate``).
``GENERATE_RELAY=thread`` turns the hub off (every trace in its task's thread, as before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F
from django.db.models.functions import Coalesce

from annotator import events, flags
from annotator.generation.backends import GenerationRequest
from annotator.generation.steps import ClosedStep, StepSegmenter
from annotator.models import Backend, Trace, TraceStatus
from annotator.services.generation import (
    BATCH_WAIT_S,
    STOP_POLL_S,
    TRACE_TIMING,
    Generation,
    _claim,
    _fail,
    _generate,
    backend_for,
    failure_text,
    owner_token,
    step_event,
    steps_save,
    storable_text,
    trace_generate,
    trace_status_event,
)

log = logging.getLogger(__name__)

SHUTDOWN_ERROR = "The generate worker shut down before this generation ended; its closed steps are kept."


def trace_relay(*, trace_id: int, owner: str = "") -> None:
    """The generate worker's entry point for a trace: a streamed vLLM generation is handed to this
    process's relay hub (the call returns once the hub holds it); anything else (a local model, a
    guided trace, or ``GENERATE_RELAY=thread``) runs here, in the task's thread, to its end."""
    if settings.GENERATE_RELAY != "asyncio" or not _relayable(trace_id):
        trace_generate(trace_id=trace_id, owner=owner)
        return
    hub = RelayHub.get()
    if not hub.acquire_slot():  # before the claim: a trace waiting for room stays queued
        trace_generate(trace_id=trace_id, owner=owner)  # the hub is draining (worker shutdown)
        return
    try:
        claimed = _claim(trace_id, owner_token(owner))
        if claimed is None:
            hub.release_slot()
            return
        trace, heartbeat = claimed
        try:
            trace_status_event(trace)
            gen = Generation(trace_id)
            backend = backend_for(gen.model())
            if gen.guided or not hasattr(backend, "astream"):  # changed since _relayable looked
                hub.release_slot()
                heartbeat.start()
                try:
                    _generate(trace_id)
                finally:
                    heartbeat.release()
                return
            request = gen.request()
        except Exception as exc:
            log.exception("generation of trace %s failed", trace_id)
            hub.release_slot()
            _fail(trace_id, failure_text(exc))
            heartbeat.release()
            with contextlib.suppress(Exception):
                flags.clear_stop(trace_id)
            return
    except BaseException:
        hub.release_slot()
        raise
    hub.submit(gen, heartbeat, backend, request)


def _relayable(trace_id: int) -> bool:
    """Whether the trace streams from vLLM (and is not guided): one small query before the claim."""
    row = (
        Trace.objects.filter(pk=trace_id, status=TraceStatus.QUEUED)
        .annotate(backend=Coalesce(F("model_version__backend"), F("project__serving_model__backend")))
        .values("backend", "guide")
        .first()
    )
    return row is not None and row["backend"] == Backend.VLLM and not row["guide"]


class AsyncTokenBatcher:
    """``TokenBatcher`` on the event loop: the same leading-edge batching (a token after a quiet
    spell goes out at once; later ones wait together, never more than BATCH_WAIT_S), with a loop
    timer instead of a timer thread. Publishes of one trace are serialised by a lock, and each
    batch's text and segmenter state are taken together, so events keep their order."""

    def __init__(self, trace_id: int, segmenter: StepSegmenter) -> None:
        self.trace_id = trace_id
        self.segmenter = segmenter
        self.lock = asyncio.Lock()
        self.pending: list[str] = []
        self.yield_ts: list[float] = []
        self.timer: asyncio.TimerHandle | None = None
        self.flushing: asyncio.Task | None = None
        self.last_flush = 0.0
        self.due = False  # push() asks the caller to flush now

    def push(self, text: str) -> list[ClosedStep]:
        closed = self.segmenter.feed(text)
        self.pending.append(text)
        if TRACE_TIMING:
            self.yield_ts.append(time.time())
        wait = self.last_flush + BATCH_WAIT_S - time.monotonic()
        self.due = bool(closed) or (wait <= 0 and self.timer is None)
        if not self.due and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(max(0.0, wait), self._on_timer)
        return closed

    def _on_timer(self) -> None:
        self.timer = None
        self.flushing = asyncio.get_running_loop().create_task(self._timer_flush())

    async def _timer_flush(self) -> None:
        try:
            await self.flush()
        except Exception:  # the trace's own final flush raises it again, and fails the trace
            log.warning("token batch of trace %s not published", self.trace_id, exc_info=True)

    async def flush(self) -> None:
        async with self.lock:
            self.due = False
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
            await events.apublish_trace_event(
                self.trace_id, "trace.token", text=text, phase=self.segmenter.phase,
                partial=self.segmenter.partial, answer=self.segmenter.answer_so_far, **timing,
            )

    async def finish(self) -> tuple[list[ClosedStep], str | None]:
        await self.flush()
        return self.segmenter.finish()


class _Relayed:
    def __init__(self, gen: Generation, heartbeat: flags.TraceHeartbeat) -> None:
        self.gen = gen
        self.heartbeat = heartbeat
        self.task: asyncio.Task | None = None


def _in_db_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a hub database thread. Its connection is kept between calls (the pool bounds
    how many there are) and dropped after an error, so the next call starts on a fresh one."""
    try:
        return fn(*args)
    except Exception:
        with contextlib.suppress(Exception):
            connection.close()
        raise


STEP_WRITERS = 2  # batch INSERTs of closed steps at once (the other database threads end traces)


def _save_steps(rows: list[tuple[Trace, int, str]]) -> list[Any]:
    """Save the closed steps of many traces in one INSERT; if that fails, one by one, so that one
    trace's bad row (its trace deleted meanwhile) fails that trace only. Returns, per row, the saved
    step or the exception."""
    try:
        return list(steps_save(rows))
    except Exception:
        log.warning("relay hub: a batch of %d steps failed; saving them one by one", len(rows), exc_info=True)
        with contextlib.suppress(Exception):
            connection.close()
    out: list[Any] = []
    for row in rows:
        try:
            out.extend(steps_save([row]))
        except Exception as exc:
            out.append(exc)
    return out


def _release(heartbeat: flags.TraceHeartbeat, trace_id: int) -> None:
    heartbeat.release()
    with contextlib.suppress(Exception):
        flags.clear_stop(trace_id)


class RelayHub:
    """One per generate worker process: an event loop in its own thread, relaying traces."""

    _instance: RelayHub | None = None
    _guard = threading.Lock()

    def __init__(self, *, capacity: int, db_threads: int) -> None:
        self.pid = os.getpid()
        self.capacity = capacity
        self.loop = asyncio.new_event_loop()
        self.slots = threading.BoundedSemaphore(capacity)
        self.db = concurrent.futures.ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="relay-db",
                                                        initializer=close_old_connections)
        self.relayed: dict[int, _Relayed] = {}  # touched on the loop only
        self.accepting = True
        self.idle = threading.Event()  # no trace in flight
        self.idle.set()
        self.in_flight = 0
        self._count_guard = threading.Lock()
        self.backends: set[Any] = set()
        self.step_rows: list[tuple[Trace, int, str, asyncio.Future]] = []  # waiting to be saved
        self.step_writers = 0
        self._thread = threading.Thread(target=self._run, name="relay-hub", daemon=True)
        self._thread.start()
        log.info("relay hub: relaying vLLM streams on one event loop (up to %d traces, %d database threads)",
                 capacity, db_threads)

    @classmethod
    def get(cls) -> RelayHub:
        with cls._guard:
            if cls._instance is None or cls._instance.pid != os.getpid():  # a forked child needs its own
                cls._instance = cls(capacity=settings.GENERATE_RELAY_MAX_TRACES,
                                    db_threads=settings.GENERATE_RELAY_DB_THREADS)
            return cls._instance

    @classmethod
    def running(cls) -> RelayHub | None:
        hub = cls._instance
        return hub if hub is not None and hub.pid == os.getpid() else None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._beat())
        self.loop.create_task(self._poll_stops())
        self.loop.run_forever()

    # --- from the Celery task's thread ------------------------------------------------------------

    def acquire_slot(self) -> bool:
        """Wait for room in the hub; False when it is draining (the caller generates in its thread)."""
        if not self.accepting:
            return False
        self.slots.acquire()
        return True

    def release_slot(self) -> None:
        self.slots.release()

    def submit(self, gen: Generation, heartbeat: flags.TraceHeartbeat, backend: Any,
               request: GenerationRequest) -> concurrent.futures.Future:
        """Relay a claimed trace (its slot already taken; released when the relay ends)."""
        with self._count_guard:
            self.in_flight += 1
            self.idle.clear()
        future = asyncio.run_coroutine_threadsafe(self._relay(gen, heartbeat, backend, request), self.loop)
        future.add_done_callback(self._relay_done)
        return future

    def _relay_done(self, _future: concurrent.futures.Future) -> None:
        self.release_slot()
        with self._count_guard:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    def drain(self, timeout_s: float) -> None:
        """Worker shutdown: take no more; let the traces in flight end for up to ``timeout_s``; end the
        rest ``failed`` (a stopping one ``stopped``), saying the worker shut down."""
        self.accepting = False
        try:
            self._drain(timeout_s)
        finally:
            self.close_connections()

    def close_connections(self) -> None:
        """Close each database thread's connection (they are kept between jobs), so none outlives
        the worker, e.g. a test database being dropped just after the worker exits."""
        n = self.db._max_workers
        barrier = threading.Barrier(n, timeout=2)

        def close() -> None:
            with contextlib.suppress(Exception):
                connection.close()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # one job per thread: each waits until every thread has taken one

        jobs = [self.db.submit(close) for _ in range(n)]
        concurrent.futures.wait(jobs, timeout=5)

    def _drain(self, timeout_s: float) -> None:
        if self.idle.wait(timeout_s):
            return
        log.warning("relay hub: %d trace(s) still streaming after %.0f s; ending them", len(self.relayed), timeout_s)

        def cancel_all() -> None:
            for relayed in self.relayed.values():
                if relayed.task is not None:
                    relayed.task.cancel()

        self.loop.call_soon_threadsafe(cancel_all)
        self.idle.wait(10)

    # --- on the loop ------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.loop.run_in_executor(self.db, _in_db_thread, fn, *args)

    async def _relay(self, gen: Generation, heartbeat: flags.TraceHeartbeat, backend: Any,
                     request: GenerationRequest) -> None:
        trace_id = gen.trace.pk
        relayed = self.relayed[trace_id] = _Relayed(gen, heartbeat)
        relayed.task = asyncio.current_task()
        self.backends.add(backend)
        batcher = AsyncTokenBatcher(trace_id, gen.segmenter)
        try:
            try:
                await self._stream(gen, backend, request, batcher)
            except asyncio.CancelledError:  # the worker is shutting down past its drain time
                if gen.stopped:
                    gen.finish_reason = "cancelled"
                    await self._db(gen.end, [], None)
                else:
                    await self._db(_fail, trace_id, SHUTDOWN_ERROR)
            except Exception as exc:
                log.exception("generation of trace %s failed", trace_id)
                await self._db(_fail, trace_id, failure_text(exc))
        except BaseException:
            # Not even the failure could be recorded: the released heartbeat lets the sweep end it.
            log.exception("could not end trace %s", trace_id)
        finally:
            self.relayed.pop(trace_id, None)
            try:
                await self._db(_release, heartbeat, trace_id)
            except BaseException:
                log.exception("could not release the heartbeat of trace %s", trace_id)

    async def _stream(self, gen: Generation, backend: Any, request: GenerationRequest,
                      batcher: AsyncTokenBatcher) -> None:
        delivered, started = 0, time.monotonic()
        try:
            async for delta in backend.astream(request, should_stop=gen.should_stop):
                if gen.deliverable(delta.text):
                    if gen.pace:
                        delivered += 1
                        await _pace(started + delivered / gen.pace, gen)
                    if not gen.stopped:
                        closed = batcher.push(storable_text(delta.text))
                        if batcher.due:
                            await batcher.flush()
                        for step in closed:  # after the token that closed it: trace.step follows it
                            await self._closed(gen, step, batcher)
                gen.finished(delta)
        finally:
            with contextlib.suppress(Exception):
                if batcher.flushing is not None:
                    await batcher.flushing
            await batcher.flush()  # what the model wrote before an error still reaches the viewers
        remaining, answer = await batcher.finish() if gen.outcome()[1] else ([], None)
        await self._db(gen.end, remaining, answer)

    async def _closed(self, gen: Generation, step: ClosedStep, batcher: AsyncTokenBatcher) -> None:
        """A step closed: saved in a batch with the other traces' steps (one INSERT), announced from
        the loop, then scored (in a database thread) when the project scores steps."""
        future = self.loop.create_future()
        self.step_rows.append((gen.trace, step.index, step.text, future))
        self._write_steps()
        saved = await future
        async with batcher.lock:  # after this trace's token batches, before its next ones
            await events.apublish_trace_event(gen.trace.pk, "trace.step", step=step_event(saved))
        if gen.scorers:
            await self._db(gen.saved, step, saved)
        else:
            gen.saved(step, saved)  # no database work without scorers

    def _write_steps(self) -> None:
        """Start a batch INSERT of the waiting steps, unless STEP_WRITERS batches are already being
        written (the waiting steps then go in the next batch, when one ends)."""
        if not self.step_rows or self.step_writers >= STEP_WRITERS:
            return
        rows, self.step_rows = self.step_rows, []
        self.step_writers += 1
        job = self.loop.run_in_executor(self.db, _in_db_thread, _save_steps, [r[:3] for r in rows])

        def done(job: asyncio.Future) -> None:
            self.step_writers -= 1
            if job.cancelled() or job.exception() is not None:
                error = job.exception() if not job.cancelled() else asyncio.CancelledError()
                results: list[Any] = [error] * len(rows)
            else:
                results = job.result()
            for row, result in zip(rows, results, strict=True):
                future = row[3]
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            self._write_steps()

        job.add_done_callback(done)

    async def _beat(self) -> None:
        """Renew every relayed trace's heartbeat, all in one round trip, every third of its lifetime."""
        interval = max(2, int(settings.GENERATE_HEARTBEAT_S)) / 3
        while True:
            await asyncio.sleep(interval)
            beats = [r.heartbeat for r in self.relayed.values()]
            if not beats:
                continue
            try:
                pipe = flags.async_redis_client().pipeline(transaction=False)
                for beat in beats:
                    pipe.set(beat.key, beat.token, ex=beat.ttl)
                await pipe.execute()
            except Exception:  # a Redis hiccup: the next beat comes before the key expires
                log.warning("relay hub: heartbeats not renewed", exc_info=True)

    async def _poll_stops(self) -> None:
        """Read every relayed trace's stop flag, all in one command (MGET), every STOP_POLL_S: with
        200 traces that is 20 commands a second for Valkey, not 4,000 (a pipeline of EXISTS)."""
        while True:
            await asyncio.sleep(STOP_POLL_S)
            watched = [(pk, r.gen) for pk, r in self.relayed.items() if not r.gen.stopped]
            if not watched:
                continue
            try:
                found = await flags.async_redis_client().mget([flags.stop_key(pk) for pk, _gen in watched])
            except Exception:  # Redis away for a moment (a restart): keep generating, ask again later
                log.warning("relay hub: stop flags unreadable; asking again", exc_info=True)
                continue
            for (_pk, gen), stop in zip(watched, found, strict=True):
                if stop is not None:
                    gen.stopped = True


async def _pace(deadline: float, gen: Generation) -> None:
    """Paced mode: hold the next delta until its time, seeing a stop within STOP_POLL_S."""
    while not gen.stopped:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, STOP_POLL_S))


def relay_drain() -> None:
    """Called as the worker shuts down (annotator/tasks.py)."""
    hub = RelayHub.running()
    if hub is not None:
        hub.drain(settings.GENERATE_RELAY_DRAIN_S)
