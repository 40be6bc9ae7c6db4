"""The web process's fan-out of trace events (annotator/fanout.py): every viewer of a trace gets
each of its events once and in order, and nothing of another trace; a viewer that leaves mid-stream
does not stop the others, and one that joins after everybody left gets the stream again.

Real Daphne (one of each fan-out: `process`, the default, and `layer`, the channel layer's path),
the session's real Celery generate worker, Valkey, and tests/support/fake_vllm.py as vLLM.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from annotator import events
from annotator.models import ModelVersion, Trace
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from tests.support.live import web_server
from tests.support.livefixtures import live_env
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

STEPS = [f"{i}. {i * 3} + {i} = {i * 4}" for i in range(1, 16)]
COMPLETION = render_completion(STEPS, "done")


def _history(trace_id: int) -> list[str]:
    return [json.loads(text) for text in events.events_after(trace_id, 0)]


@pytest.mark.parametrize("fanout", ["process", "layer"])
def test_viewers_of_three_traces_get_each_event_of_their_own_trace_once_and_in_order(
        transactional_db, live_stack, scripted_model, worker_tmp, fanout):
    with web_server(worker_tmp, name=f"daphne-{fanout}", TRACE_FANOUT=fanout) as (addr, _web):
        live = live_env(addr, scripted_model)
        with FakeVLLM(completion=COMPLETION, chunk_size=4, delay_s=0.02) as fake:
            model = ModelVersion.objects.create(project=live.project, name="served", base_model="demo",
                                                backend="vllm", backend_options={"base_url": fake.base_url})
            traces = [Trace.objects.create(project=live.project, prompt=live.prompt, model_version=model,
                                           sampling_params={"temperature": 0, "max_new_tokens": 2000})
                      for _ in range(3 if fanout == "process" else 2)]  # the layer's path: the baseline

            async def scenario():
                sockets = {t.pk: [await Socket.open(live, t.pk, user=u, last_seq=0)
                                  for u in ("supervisor", "viewer", "owner")] for t in traces}
                first = sockets[traces[0].pk]
                assert (await first[0].act(action="start"))["type"] == "ack"
                for trace in traces[1:]:
                    assert (await sockets[trace.pk][0].act(action="start"))["type"] == "ack"
                # One viewer of the first trace leaves once it has seen a step; the others go on.
                await first[1].until(lambda e: e["type"] == "trace.step")
                await first[1].close()
                for trace in traces:
                    for ws in sockets[trace.pk]:
                        if ws is not first[1]:
                            await ws.until(finished, timeout=60)
                            await ws.close()
                # Everybody left: a viewer who comes now gets the trace's events (a replay, here).
                late = await Socket.open(live, traces[0].pk, user="viewer", last_seq=0)
                await late.until(finished)
                await late.close()
                return sockets, late

            sockets, late = asyncio.run(scenario())
    for trace in traces:
        trace.refresh_from_db()
        assert trace.status == "finished", trace.error
        history = [e for e in _history(trace.pk) if e["type"] != "presence"]
        for ws in sockets[trace.pk] + ([late] if trace == traces[0] else []):
            got = [e for e in ws.sequenced() if e["type"] != "presence"]
            assert all(e["trace"] == trace.pk for e in got)  # nothing of another trace
            if ws is sockets[traces[0].pk][1]:  # the one who left: a prefix, in order, no repeat
                assert got == history[: len(got)] and got
            else:
                assert got == history, f"trace {trace.pk}: {[e['seq'] for e in got][:40]}"
        streamed = "".join(e["text"] for e in history if e["type"] == "trace.token")
        assert streamed == COMPLETION
