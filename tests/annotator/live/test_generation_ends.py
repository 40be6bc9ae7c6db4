"""A generation always ends: whatever goes wrong, the trace ends `finished`, `stopped` or `failed`
with its reason, on REST and on the socket, and the text saved is the text the model wrote.

Real Daphne, real Celery generate workers, real PostgreSQL and Valkey. The vLLM backend runs
against tests/support/fake_vllm.py (a protocol stand-in; vLLM needs CUDA); the multi-byte test
runs a real tiny model with a real byte-level tokenizer.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotator.models import ModelVersion, Trace
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from tests.support.live import start_worker
from tests.support.models import build_scripted_lm
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

SLOW_STEPS = [f"{i}. step number {i} of a long derivation" for i in range(1, 61)]


def _api(live, user="supervisor") -> APIClient:
    client = APIClient()
    client.force_authenticate(live.users[user])
    return client


def _vllm_model(live, fake: FakeVLLM) -> ModelVersion:
    return ModelVersion.objects.create(
        project=live.project, name="served", base_model="demo", backend="vllm",
        backend_options={"base_url": fake.base_url},
    )


def _queued(live, model: ModelVersion, max_new_tokens: int = 400) -> Trace:
    return Trace.objects.create(
        project=live.project,
        prompt=live.prompt,
        model_version=model,
        sampling_params={"temperature": 0, "max_new_tokens": max_new_tokens},
    )


def _watch_to_the_end(live, trace_id: int, *, start: bool = True, timeout: float = 60) -> Socket:
    """Connect as a supervisor from the first event, start the trace, and wait for its end."""

    async def scenario():
        ws = await Socket.open(live, trace_id, user="supervisor", last_seq=0)
        if start:
            assert (await ws.act(action="start"))["type"] == "ack"
        await ws.until(finished, timeout=timeout)
        await ws.close()
        return ws

    return asyncio.run(scenario())


def _detail(live, trace_id: int) -> dict:
    response = _api(live, "viewer").get(f"/api/projects/{live.project.pk}/traces/{trace_id}/")
    assert response.status_code == 200
    return response.json()


def test_nul_in_the_sampled_answer_does_not_leave_the_trace_running(live):
    # Before: the final update (outside the try) failed on the NUL, and the trace stayed `running`.
    completion = render_completion(["1. first", "2. second"], "the answer is \x0042")
    with FakeVLLM(completion=completion, chunk_size=4) as fake:
        trace = _queued(live, _vllm_model(live, fake))
        ws = _watch_to_the_end(live, trace.pk)
    end = [e for e in ws.sequenced() if e["type"] == "trace.status"][-1]
    detail = _detail(live, trace.pk)
    # PostgreSQL cannot store U+0000: it is kept as U+FFFD, everything else as the model wrote it.
    assert end["status"] == detail["status"] == "finished", detail["error"]
    assert detail["final_answer"] == end["final_answer"] == "the answer is \ufffd42"
    assert [s["text"] for s in detail["steps"]] == ["1. first", "2. second"]


def test_nul_and_lone_surrogates_in_steps_are_stored_as_replacement_characters(live):
    pieces = ["<think>\n", "1. a\x00b\n", "2. c", "\udc00", "d\n", "</think>\n", "ok"]
    with FakeVLLM(pieces=pieces) as fake:
        trace = _queued(live, _vllm_model(live, fake))
        _watch_to_the_end(live, trace.pk)
    detail = _detail(live, trace.pk)
    assert detail["status"] == "finished", detail["error"]
    assert [s["text"] for s in detail["steps"]] == ["1. a\ufffdb", "2. c\ufffdd"]


def test_a_surrogate_pair_split_across_deltas_is_one_character(live):
    # A server that cuts its text in UTF-16 units sends the two halves of 😀 in two deltas.
    pieces = ["<think>\n", "1. smile ", "\ud83d", "\ude00", " ok\n", "2. caf", "é ✓ 中\n", "</think>\n", "Done"]
    with FakeVLLM(pieces=pieces) as fake:
        trace = _queued(live, _vllm_model(live, fake))
        ws = _watch_to_the_end(live, trace.pk)
    detail = _detail(live, trace.pk)
    assert detail["status"] == "finished", detail["error"]
    assert [s["text"] for s in detail["steps"]] == ["1. smile 😀 ok", "2. café ✓ 中"]
    streamed = "".join(e["text"] for e in ws.sequenced() if e["type"] == "trace.token")
    assert streamed == "<think>\n1. smile 😀 ok\n2. café ✓ 中\n</think>\nDone"


def test_utf8_cut_inside_characters_on_the_wire_arrives_whole(live):
    steps = ["1. café ✓ 😀 中文", "2. naïve \u2013 ß"]
    with FakeVLLM(completion=render_completion(steps, "Ω"), chunk_size=2, split_utf8=True) as fake:
        trace = _queued(live, _vllm_model(live, fake))
        _watch_to_the_end(live, trace.pk)
    detail = _detail(live, trace.pk)
    assert detail["status"] == "finished", detail["error"]
    assert [s["text"] for s in detail["steps"]] == steps and detail["final_answer"] == "Ω"


@pytest.fixture(scope="module")
def multibyte_model(tmp_path_factory):
    """A real tiny model that writes multi-byte characters its tokenizer splits into byte tokens."""
    script = ["1. 12 + 30 = 42 ✓", "2. café: 42 \u2212 5 = 37", "3. 中文 😀 37 + 8 = 45"]
    path = build_scripted_lm(
        tmp_path_factory.mktemp("models") / "multibyte", script=script, answer="45 ✓", corpus_has_script=False
    )
    return path, script


def test_a_real_model_writing_multibyte_characters_split_into_byte_tokens(live, multibyte_model):
    from transformers import AutoTokenizer

    path, script = multibyte_model
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer("😀", add_special_tokens=False)["input_ids"]) > 1  # split across tokens indeed
    model = ModelVersion.objects.create(project=live.project, name="multibyte", base_model=str(path), path=str(path))
    trace = _queued(live, model, max_new_tokens=200)
    ws = _watch_to_the_end(live, trace.pk)
    detail = _detail(live, trace.pk)
    assert detail["status"] == "finished", detail["error"]
    assert [s["text"] for s in detail["steps"]] == script and detail["final_answer"] == "45 ✓"
    streamed = "".join(e["text"] for e in ws.sequenced() if e["type"] == "trace.token")
    assert "\ufffd" not in streamed and streamed == render_completion(script, "45 ✓")


@pytest.fixture
def refuse_finishing():
    """A real database fault at the end of a generation: a trigger that refuses to mark a trace
    finished (as a full disk or a lost connection would fail that update)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_finish() RETURNS trigger AS $$
            BEGIN
              IF NEW.status = 'finished' THEN RAISE EXCEPTION 'could not extend file: No space left on device'; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_refuse_finish BEFORE UPDATE ON annotator_trace
              FOR EACH ROW EXECUTE FUNCTION test_refuse_finish();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_refuse_finish ON annotator_trace; DROP FUNCTION test_refuse_finish();")


def test_an_unexpected_error_ends_the_trace_failed_with_its_reason(live, refuse_finishing):
    with FakeVLLM(completion=render_completion(["1. one", "2. two"], "done")) as fake:
        trace = _queued(live, _vllm_model(live, fake))
        ws = _watch_to_the_end(live, trace.pk)
    end = [e for e in ws.sequenced() if e["type"] == "trace.status"][-1]
    detail = _detail(live, trace.pk)
    assert end["status"] == detail["status"] == "failed"
    assert "No space left on device" in end["error"] and end["error"] == detail["error"]
    assert [s["text"] for s in detail["steps"]] == ["1. one", "2. two"]  # what was closed is kept


def test_rest_stop_answers_stopping_then_the_trace_ends_stopped(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS, "done"), chunk_size=4, delay_s=0.02) as fake:
        trace = _queued(live, _vllm_model(live, fake), max_new_tokens=1000)
        api = _api(live)

        async def scenario():
            ws = await Socket.open(live, trace.pk, user="viewer", last_seq=0)
            starter = await Socket.open(live, trace.pk, user="supervisor")
            await starter.recv()
            await starter.act(action="start")
            await ws.until(lambda e: e["type"] == "trace.step")
            stop = await asyncio.to_thread(api.post, f"/api/projects/{live.project.pk}/traces/{trace.pk}/stop/")
            await ws.until(finished, timeout=5)
            await ws.close()
            await starter.close()
            return ws, stop

        ws, stop = asyncio.run(scenario())
    assert stop.status_code == 200 and stop.json()["status"] == "stopping"
    statuses = [e["status"] for e in ws.sequenced() if e["type"] == "trace.status"]
    assert statuses == ["running", "stopping", "stopped"]
    assert Trace.objects.get(pk=trace.pk).status == "stopped"


def test_a_killed_generate_worker_does_not_leave_its_trace_running(live, worker_tmp, settings):
    """SIGKILL the worker mid-trace (its whole process group, as a crash or the OOM killer would):
    the sweep of the other workers ends the trace `failed` within 30 s, closed steps kept."""
    queue = f"generate-doomed-{time.monotonic_ns()}"
    doomed = start_worker(worker_tmp, queues=queue, name="doomed", pool="threads", concurrency=2,
                          CELERY_GENERATE_QUEUE=queue)
    settings.CELERY_GENERATE_QUEUE = queue  # this trace goes to the doomed worker only
    try:
        with FakeVLLM(completion=render_completion(SLOW_STEPS, "done"), chunk_size=4, delay_s=0.03) as fake:
            trace = _queued(live, _vllm_model(live, fake), max_new_tokens=2000)
            from annotator.services.generation import trace_start

            trace_start(trace=trace, actor=live.users["supervisor"])
            deadline = time.monotonic() + 30
            while trace.steps.count() < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert trace.steps.count() >= 2, doomed.output()[-2000:]
            doomed.kill()
            killed = time.monotonic()
            while time.monotonic() - killed < 40:
                trace.refresh_from_db()
                if trace.status not in ("running", "stopping"):
                    break
                time.sleep(0.25)
            took = time.monotonic() - killed
    finally:
        doomed.stop()
    assert trace.status == "failed" and trace.finish_reason == "worker_lost", (trace.status, took)
    assert took < 30, f"the trace stayed running {took:.1f} s after its worker died"
    kept = trace.steps.count()
    assert kept >= 2 and f"its {kept} closed step(s) are kept" in trace.error
    assert _detail(live, trace.pk)["error"] == trace.error
