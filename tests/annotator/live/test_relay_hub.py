"""The generate worker relays its vLLM streams on one event loop (annotator/services/relay.py).

Real Celery generate workers (threads pool, 4 threads), real PostgreSQL and Valkey, and
tests/support/fake_vllm.py as the vLLM server (vLLM needs CUDA). What a user would notice: many
traces at once on one worker all arrive whole and in order; a stop still stops one of them; a
server that fails mid-stream fails its trace with the reason; a worker that is killed or shut
down never leaves a trace running.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from annotator import events
from annotator.models import ModelVersion, Trace
from annotator.services.generation import trace_start, trace_stop
from annotator.services.relay import SHUTDOWN_ERROR
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from tests.support.live import start_worker
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

STEPS = [f"{i}. {i * 7} + {i} = {i * 8}" for i in range(1, 13)]
COMPLETION = render_completion(STEPS, "done")
SLOW_STEPS = [f"{i}. step number {i} of a long derivation" for i in range(1, 61)]


def _vllm_model(live, fake: FakeVLLM, name: str = "served") -> ModelVersion:
    return ModelVersion.objects.create(project=live.project, name=name, base_model="demo", backend="vllm",
                                       backend_options={"base_url": fake.base_url})


def _queued(live, model: ModelVersion, n: int = 1, max_new_tokens: int = 2000) -> list[Trace]:
    return [Trace.objects.create(project=live.project, prompt=live.prompt, model_version=model,
                                 sampling_params={"temperature": 0, "max_new_tokens": max_new_tokens})
            for _ in range(n)]


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _history(trace_id: int) -> list[dict]:
    return [json.loads(text) for text in events.events_after(trace_id, 0)]


def _wait_ended(traces: list[Trace], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ids = [t.pk for t in traces]
    while time.monotonic() < deadline:
        if not Trace.objects.filter(pk__in=ids, status__in=["queued", "running", "stopping"]).exists():
            return
        time.sleep(0.2)
    left = list(Trace.objects.filter(pk__in=ids).exclude(status__in=["finished", "stopped", "failed"])
                .values_list("pk", "status"))
    raise AssertionError(f"traces not ended after {timeout} s: {left}")


def test_fifty_traces_on_one_worker_arrive_whole_and_in_order_and_a_stop_stops_only_its_trace(live, live_stack):
    _addr, worker = live_stack
    with FakeVLLM(completion=COMPLETION, chunk_size=4, delay_s=0.05) as fake:  # about 3 s per trace
        traces = _queued(live, _vllm_model(live, fake), n=50)
        threads_before = _threads(worker.proc.pid)
        for trace in traces:
            trace_start(trace=trace, actor=live.users["supervisor"])
        # While they stream: all 50 at once on a worker with 4 pool threads, and no thread per trace.
        most_running, most_threads = 0, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = Trace.objects.filter(pk__in=[t.pk for t in traces], status="running").count()
            most_running = max(most_running, running)
            most_threads = max(most_threads, _threads(worker.proc.pid))
            if most_running == 50 or (running == 0 and most_running):
                break
            time.sleep(0.05)
        doomed = traces[:5]
        for trace in doomed:  # stop five of them mid-stream, once they have a step
            while not trace.steps.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            trace_stop(trace=trace, actor=live.users["supervisor"])
        _wait_ended(traces, timeout=90)
    assert most_running == 50, f"at most {most_running} of 50 traces streamed at once"
    assert most_threads - threads_before < 20, (threads_before, most_threads)  # the hub's few, not 50

    for trace in traces:
        trace.refresh_from_db()
        history = _history(trace.pk)
        seqs = [e["seq"] for e in history]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"trace {trace.pk}: seqs {seqs}"
        statuses = [e["status"] for e in history if e["type"] == "trace.status"]
        tokens = "".join(e["text"] for e in history if e["type"] == "trace.token")
        steps = list(trace.steps.order_by("index").values_list("text", flat=True))
        streamed = ""
        for event in history:  # a step's event comes after the token that closed it
            if event["type"] == "trace.token":
                streamed += event["text"]
            elif event["type"] == "trace.step":
                assert event["step"]["text"] in streamed, (trace.pk, event, streamed)
        if trace in doomed:
            assert trace.status == "stopped" and trace.finish_reason == "cancelled", (trace.pk, trace.error)
            assert statuses == ["running", "stopping", "stopped"]
            assert 1 <= len(steps) < len(STEPS) and steps == STEPS[: len(steps)]
            assert COMPLETION.startswith(tokens)
        else:
            assert trace.status == "finished", (trace.pk, trace.status, trace.error)
            assert statuses == ["running", "finished"] and history[-1]["type"] == "trace.status"
            assert tokens == COMPLETION
            assert steps == STEPS and trace.final_answer == "done"
            assert trace.completion_tokens == -(-len(COMPLETION) // 4)
    assert "relay hub: relaying vLLM streams on one event loop" in worker.output()


@pytest.mark.parametrize("fail_how, reason", [
    ("error", "vLLM reported an error during generation"),
    ("drop", "the vLLM stream ended before the completion finished"),
])
def test_a_server_failing_mid_stream_fails_the_trace_with_the_reason(live, fail_how, reason):
    pieces = 4 * 10  # ten tokens of four characters: the first steps close before the failure
    with FakeVLLM(completion=COMPLETION, chunk_size=4, delay_s=0.01, fail_after=pieces, fail_how=fail_how) as fake:
        (trace,) = _queued(live, _vllm_model(live, fake))

        async def scenario():
            ws = await Socket.open(live, trace.pk, user="supervisor", last_seq=0)
            assert (await ws.act(action="start"))["type"] == "ack"
            await ws.until(finished, timeout=30)
            await ws.close()
            return ws

        ws = asyncio.run(scenario())
    end = [e for e in ws.sequenced() if e["type"] == "trace.status"][-1]
    trace.refresh_from_db()
    client = APIClient()
    client.force_authenticate(live.users["viewer"])
    detail = client.get(f"/api/projects/{live.project.pk}/traces/{trace.pk}/").json()
    assert end["status"] == detail["status"] == "failed" and trace.finish_reason == "error"
    if fail_how == "error":
        assert end["error"] == detail["error"] == reason
    else:  # the cut reaches the client as an early end or as a broken read, depending on timing
        assert end["error"] == detail["error"] and (reason in end["error"] or "cannot stream from vLLM" in end["error"])
    assert "EngineDeadError" not in end["error"]  # what the server said is logged, never shown
    kept = [s["text"] for s in detail["steps"]]
    assert kept and kept == STEPS[: len(kept)]  # the steps closed before the failure are kept


def test_killed_worker_with_many_relayed_traces_has_them_all_ended_by_the_sweep(live, worker_tmp, settings):
    queue = f"generate-doomed-{time.monotonic_ns()}"
    doomed = start_worker(worker_tmp, queues=queue, name="doomed-hub", pool="threads", concurrency=2,
                          CELERY_GENERATE_QUEUE=queue)
    settings.CELERY_GENERATE_QUEUE = queue
    try:
        with FakeVLLM(completion=render_completion(SLOW_STEPS, "done"), chunk_size=4, delay_s=0.03) as fake:
            traces = _queued(live, _vllm_model(live, fake), n=8)
            for trace in traces:
                trace_start(trace=trace, actor=live.users["supervisor"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(t.steps.count() < 2 for t in traces):
                time.sleep(0.1)
            assert all(t.steps.count() >= 2 for t in traces), doomed.output()[-2000:]
            doomed.kill()
            killed = time.monotonic()
            _wait_ended(traces, timeout=40)
            took = time.monotonic() - killed
    finally:
        doomed.stop()
    assert took < 30, f"traces stayed running {took:.1f} s after their worker died"
    for trace in traces:
        trace.refresh_from_db()
        assert (trace.status, trace.finish_reason) == ("failed", "worker_lost")
        assert f"its {trace.steps.count()} closed step(s) are kept" in trace.error


def test_warm_shutdown_lets_short_traces_end_and_ends_the_rest_with_a_reason(live, worker_tmp, settings):
    queue = f"generate-shutdown-{time.monotonic_ns()}"
    worker = start_worker(worker_tmp, queues=queue, name="draining", pool="threads", concurrency=2,
                          CELERY_GENERATE_QUEUE=queue, GENERATE_RELAY_DRAIN_S="3")
    settings.CELERY_GENERATE_QUEUE = queue
    try:
        with FakeVLLM(completion=render_completion(SLOW_STEPS, "done"), chunk_size=4, delay_s=0.03) as slow, \
                FakeVLLM(completion=COMPLETION, chunk_size=4, delay_s=0.03) as quick:
            (long,) = _queued(live, _vllm_model(live, slow))
            (short,) = _queued(live, _vllm_model(live, quick, name="quick"))
            for trace in (long, short):
                trace_start(trace=trace, actor=live.users["supervisor"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (long.steps.exists() and short.steps.exists()):
                time.sleep(0.05)
            worker.kill(signal.SIGTERM)  # a warm shutdown (what `docker compose stop` sends)
            asked = time.monotonic()
            _wait_ended([long, short], timeout=20)
            took = time.monotonic() - asked
    finally:
        worker.stop()
    long.refresh_from_db()
    short.refresh_from_db()
    assert short.status == "finished" and short.final_answer == "done", short.error  # ~2 s left: drained
    assert (long.status, long.finish_reason, long.error) == ("failed", "error", SHUTDOWN_ERROR)
    assert long.steps.count() >= 1
    assert took < 10, f"the shutdown took {took:.1f} s to end its traces (the sweep would take ~20 s)"
