"""Fault: Valkey (the Channels layer, the Celery broker and the event log) is killed mid-stream and
started again empty. The trace goes on, and a viewer that reconnects with its last `seq` resumes:
the text it collected is the text stored, with no gap and no duplicate, and it sees the trace end.

Everything is real and runs against a Valkey of this test's own (the system Redis is never
touched): a Daphne web server and a Celery generate worker started for it, the scripted tiny model
generating in paced mode, and a websocket client that reconnects the way the browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets
from rest_framework.test import APIClient

from annotator import flags
from annotator.models import ModelVersion, Trace, TraceMode, TraceStatus
from tests.annotator.live.conftest import Socket
from tests.support.fake_vllm import FakeVLLM
from tests.support.live import ThrowawayValkey, start_worker, web_server
from tests.support.livefixtures import Live, live_env
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

PACE_TPS = 4  # the scripted completion is ~20 tokens: about 5 s of stream, time to kill and restart
DOWN_S = 2.0
VLLM_COMPLETION = render_completion([f"{i}. {i} + {i} = {2 * i}" for i in range(1, 9)], "done")  # ~6 s


@pytest.fixture(scope="module")
def valkey_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """(valkey, web address, worker) with both processes on the throwaway Valkey."""
    tmp = tmp_path_factory.mktemp("valkey-fault")
    valkey = ThrowawayValkey(tmp).start()
    queue = f"generate-valkey-fault-{time.monotonic_ns()}"
    env = {"REDIS_URL": valkey.url, "CELERY_BROKER_URL": valkey.url, "CELERY_GENERATE_QUEUE": queue}
    worker = start_worker(tmp, queues=queue, name="generate-valkey", pool="threads", concurrency=2, **env)
    try:
        with web_server(tmp, name="daphne-valkey", **env) as (addr, web):
            yield valkey, addr, worker, web
    finally:
        worker.stop()
        valkey.stop()


class Viewer:
    """A viewer that keeps watching across drops, as the browser does (frontend/src/stream/reducer.ts):
    on a closed socket it reconnects with `?last_seq=<the last seq it saw>`; a snapshot (sent when
    the server cannot resume) resets what it shows to the snapshot's state. `streamed` is the text of
    every token event in order, and counts only while no snapshot broke the stream."""

    def __init__(self, live: Live, trace_id: int) -> None:
        self.live, self.trace_id = live, trace_id
        self.last_seq = 0
        self.steps: list[str] = []
        self.partial = self.answer = self.streamed = ""
        self.seqs: list[int] = []
        self.types: list[str] = []
        self.breaks: list[tuple[int, int]] = []  # (last seq, next seq) wherever next != last + 1
        self.connects = 0
        self.snapshots: list[dict] = []
        self.ended: dict | None = None
        self.ws = None

    async def watch(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ended is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the trace did not end for the viewer; seqs {self.seqs[-10:]}, "
                                   f"{self.connects} connections")
            try:
                async with websockets.connect(self.live.url(self.trace_id, self.last_seq),
                                              additional_headers=self.live.headers("viewer"),
                                              open_timeout=3) as ws:
                    self.ws = ws
                    self.connects += 1
                    while self.ended is None:
                        self._take(json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
            except (OSError, websockets.ConnectionClosed, websockets.InvalidStatus, TimeoutError):
                await asyncio.sleep(0.2)

    async def drop(self) -> None:
        """Lose the connection (a network blip); the viewer reconnects at once, and keeps trying."""
        await self.ws.close()

    def _take(self, event: dict) -> None:
        if event["type"] == "snapshot":
            self.snapshots.append(event)
            self.steps = [s["text"] for s in event["trace"]["steps"]]
            self.partial, self.answer, self.last_seq = event["partial"], event["answer"], event["seq"]
            return
        if "seq" not in event:
            return  # presence
        self.seqs.append(event["seq"])
        self.types.append(event["type"])
        if event["seq"] != self.last_seq + 1:
            self.breaks.append((self.last_seq, event["seq"]))
        self.last_seq = event["seq"]
        if event["type"] == "trace.token":
            self.streamed += event["text"]
            self.partial, self.answer = event["partial"], event["answer"]
        elif event["type"] == "trace.step":
            self.steps.append(event["step"]["text"])
        elif event["type"] == "trace.status" and event["status"] in ("finished", "stopped", "failed"):
            self.ended = event
            self.partial, self.answer = "", event["final_answer"]


@pytest.mark.parametrize("backend", ["local", "vllm"])
def test_viewers_resume_without_gap_or_duplicate_after_valkey_restarts(transactional_db, valkey_stack,
                                                                       scripted_model, backend):
    valkey, addr, worker, web = valkey_stack
    live = live_env(addr, scripted_model)
    with contextlib.ExitStack() as stack:
        if backend == "local":  # generated in a pool thread; published one event at a time
            trace = Trace.objects.create(project=live.project, prompt=live.prompt, model_version=live.model,
                                         sampling_params={"temperature": 0, "max_new_tokens": 120},
                                         mode=TraceMode.PACED, pace_tps=PACE_TPS)
        else:  # relayed by the worker's hub; its publishes leave in batches (annotator/events.py)
            fake = stack.enter_context(FakeVLLM(completion=VLLM_COMPLETION, chunk_size=4, delay_s=0.12))
            model = ModelVersion.objects.create(project=live.project, name="served", base_model="demo",
                                                backend="vllm", backend_options={"base_url": fake.base_url})
            trace = Trace.objects.create(project=live.project, prompt=live.prompt, model_version=model,
                                         sampling_params={"temperature": 0, "max_new_tokens": 2000})
        _outage(live, valkey, worker, web, trace)


def _outage(live, valkey, worker, web, trace) -> None:

    # The suite's other workers (tests/support/livefixtures.py) sweep this same test database for lost
    # generations, reading heartbeats from the suite's Redis, where this stack's worker never writes
    # its own (it beats in the throwaway Valkey). Beat for it there too, so that only this stack's own
    # sweep judges the trace: a studio never has two Redis servers for one database.
    beat = flags.TraceHeartbeat(trace.pk, "valkey-fault-test", ttl_s=9)
    beat.claim()
    beat.start()

    async def scenario():
        # One viewer's socket stays open through the outage; the other's drops when Valkey dies,
        # and it reconnects at once (refused while Valkey is down, so it keeps trying).
        staying, dropping = Viewer(live, trace.pk), Viewer(live, trace.pk)
        watching = [asyncio.create_task(v.watch()) for v in (staying, dropping)]
        while dropping.ws is None or staying.ws is None:
            await asyncio.sleep(0.05)
        starter = await Socket.open(live, trace.pk, user="supervisor")
        await starter.recv()
        assert (await starter.act(action="start"))["type"] == "ack"
        await starter.close()
        while staying.types.count("trace.token") < 3:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(valkey.kill)
        await dropping.drop()
        tokens_before = staying.types.count("trace.token")
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(valkey.start)
        await asyncio.gather(*watching)
        return staying, dropping, tokens_before

    try:
        staying, dropping, tokens_before = asyncio.run(scenario())
    finally:
        beat.release()
    logs = f"\nworker:\n{worker.output()[-3000:]}\nweb:\n{web.output()[-3000:]}"
    detail = APIClient()
    detail.force_authenticate(live.users["viewer"])
    stored = detail.get(f"/api/projects/{live.project.pk}/traces/{trace.pk}/").json()
    # The generation went on through the outage and ended as it would have without one.
    assert stored["status"] == TraceStatus.FINISHED, (stored["status"], stored["error"], logs)
    stored_steps = [s["text"] for s in stored["steps"]]
    assert staying.types.count("trace.token") > tokens_before, "the kill did not fall mid-stream"
    assert dropping.connects >= 2
    for viewer in (staying, dropping):
        assert viewer.ended["status"] == "finished"
        # No duplicate, no gap: every event the viewer got is the next one of the trace's sequence,
        # and what it shows at the end is what was stored.
        assert viewer.breaks == [], (viewer.seqs, logs)
        assert (viewer.steps, viewer.answer) == (stored_steps, stored["final_answer"]), logs
    # The open socket resumed without a snapshot: it saw every token, once, in order.
    assert staying.snapshots == [] and staying.seqs[0] == 1, logs
    assert staying.streamed == render_completion(stored_steps, stored["final_answer"]), logs
    # The one that reconnected with its last seq resumed from there too.
    assert dropping.snapshots == [], (len(dropping.snapshots), logs)
    assert dropping.streamed == staying.streamed
