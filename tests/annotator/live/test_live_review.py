"""The live loop end to end: real Daphne, real Celery worker, Redis channel layer, real models.

The vLLM backend's tests run against tests/support/fake_vllm.py, a local server that speaks vLLM's
OpenAI-compatible SSE wire format (vLLM itself needs CUDA and cannot run on these machines). It also
gives the stop and resume tests a stream slow enough to interrupt.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from rest_framework.test import APIClient

from annotator.models import AuditEvent, Correction, ModelVersion, Prompt, PromptImage, Trace
from annotator.services.generation import trace_start
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from tests.support.models import SCRIPT_ANSWER, SCRIPT_STEPS
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

SLOW_STEPS = [f"{i}. step number {i} of a long derivation" for i in range(1, 61)]


def _api(live, user="supervisor") -> APIClient:
    client = APIClient()
    client.force_authenticate(live.users[user])
    return client


def _create_trace(live, **body) -> int:
    response = _api(live).post(
        f"/api/projects/{live.project.pk}/traces/", {"prompt": live.prompt.pk, **body}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _queued_trace(live, model=None, max_new_tokens: int = 120) -> Trace:
    """A queued trace that is not yet generating (so viewers can connect before it starts)."""
    return Trace.objects.create(
        project=live.project,
        prompt=live.prompt,
        model_version=model or live.model,
        sampling_params={"temperature": 0, "max_new_tokens": max_new_tokens},
    )


def _vllm_model(live, fake: FakeVLLM) -> ModelVersion:
    return ModelVersion.objects.create(
        project=live.project,
        name="served",
        base_model="demo",
        backend="vllm",
        backend_options={"base_url": fake.base_url},
    )


def _step_texts(trace_id: int) -> list[str]:
    return list(Trace.objects.get(pk=trace_id).steps.order_by("index").values_list("text", flat=True))


def test_stream_to_the_end(live):
    trace_id = _create_trace(live)

    async def scenario():
        ws = await Socket.open(live, trace_id, last_seq=0)  # everything from the first event
        await ws.until(finished)
        await ws.close()
        return ws

    ws = asyncio.run(scenario())
    events = ws.sequenced()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    statuses = [e["status"] for e in events if e["type"] == "trace.status"]
    assert statuses == ["running", "finished"]
    assert [e["step"]["text"] for e in events if e["type"] == "trace.step"] == SCRIPT_STEPS
    streamed = "".join(e["text"] for e in events if e["type"] == "trace.token")
    assert streamed == render_completion(SCRIPT_STEPS, SCRIPT_ANSWER)
    assert events[-1]["final_answer"] == SCRIPT_ANSWER
    # Steps were persisted as they closed, and the trace records what produced it.
    trace = Trace.objects.get(pk=trace_id)
    assert _step_texts(trace_id) == SCRIPT_STEPS
    assert (trace.status, trace.finish_reason, trace.final_answer) == ("finished", "stop", SCRIPT_ANSWER)
    assert trace.sampling_params["temperature"] == 0 and trace.completion_tokens > 20 and trace.prompt_tokens > 5


def test_two_viewers_see_the_same_sequence_and_each_other(live):
    trace = _queued_trace(live)

    async def scenario():
        a = await Socket.open(live, trace.pk, user="viewer")
        b = await Socket.open(live, trace.pk, user="supervisor")
        snap_a, snap_b = await a.recv(), await b.recv()
        assert snap_a["type"] == snap_b["type"] == "snapshot" and snap_a["trace"]["status"] == "queued"
        presence = await a.until(lambda e: e["type"] == "presence" and len(e["watchers"]) == 2)
        assert [w["username"] for w in presence["watchers"]] == ["supervisor", "viewer"]
        assert (await b.act(action="start"))["type"] == "ack"
        await a.until(finished)
        await b.until(finished)
        await b.close()
        left = await a.until(lambda e: e["type"] == "presence" and len(e["watchers"]) == 1)
        assert left["watchers"][0]["username"] == "viewer"
        await a.close()
        return a, b

    a, b = asyncio.run(scenario())
    assert [(e["seq"], e["type"]) for e in a.sequenced()] == [(e["seq"], e["type"]) for e in b.sequenced()]
    assert len([e for e in a.sequenced() if e["type"] == "trace.step"]) == len(SCRIPT_STEPS)


def test_stop_mid_stream_halts_within_half_a_second(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS, "done"), chunk_size=4, delay_s=0.02) as fake:
        model = _vllm_model(live, fake)
        trace = _queued_trace(live, model)

        async def scenario():
            ws = await Socket.open(live, trace.pk, user="supervisor")
            await ws.recv()
            await ws.act(action="start")
            await ws.until(lambda e: e["type"] == "trace.step" and e["step"]["index"] == 2)
            asked = time.monotonic()
            ack = await ws.act(action="stop")
            assert ack["type"] == "ack"
            stopped = await ws.until(finished, timeout=5)
            took = time.monotonic() - asked
            await ws.close()
            return ws, stopped, took

        ws, stopped, took = asyncio.run(scenario())
        assert stopped["status"] == "stopped" and stopped["finish_reason"] == "cancelled"
        assert took < 0.5, f"stop took {took:.3f}s"
        seen = [e["step"]["text"] for e in ws.sequenced() if e["type"] == "trace.step"]
        assert 3 <= len(seen) < len(SLOW_STEPS)
        assert _step_texts(trace.pk) == seen  # the unfinished step was dropped, closed ones kept
        time.sleep(0.3)
        assert fake.state.client_disconnected  # the worker hung up on the server: generation really ended


def test_edit_step_then_the_model_continues_on_a_branch(live):
    trace_id = _create_trace(live)

    async def scenario():
        ws = await Socket.open(live, trace_id, user="supervisor", last_seq=0)
        await ws.until(finished)
        ack = await ws.act(
            action="edit", step_index=2, text="3. 37 + 8 = 45", expected_version=1, reason="37 + 8 is 45"
        )
        assert ack["type"] == "ack", ack
        created = await ws.until(lambda e: e["type"] == "branch.created")
        branch_id = ack["branch"]["id"]
        assert created["branch"]["id"] == branch_id and created["correction"]["new_text"] == "3. 37 + 8 = 45"
        await ws.close()
        branch = await Socket.open(live, branch_id, user="viewer", last_seq=0)
        done = await branch.until(finished)
        await branch.close()
        return branch_id, done

    branch_id, done = asyncio.run(scenario())
    assert done["status"] == "finished"
    branch = Trace.objects.get(pk=branch_id)
    assert (branch.parent_id, branch.branch_step_index) == (trace_id, 2)
    steps = list(branch.steps.order_by("index").values_list("index", "text", "origin"))
    assert steps[:3] == [(0, SCRIPT_STEPS[0], "model"), (1, SCRIPT_STEPS[1], "model"), (2, "3. 37 + 8 = 45", "human")]
    assert all(origin == "model" for _, _, origin in steps[3:])
    assert branch.completion_tokens > 0  # the model generated after the human step
    # The original stays as it was; the tree links them; the correction and its audit event exist.
    assert _step_texts(trace_id) == SCRIPT_STEPS
    detail = _api(live, "viewer").get(f"/api/projects/{live.project.pk}/traces/{trace_id}/").json()
    assert detail["branches"] == [branch_id] and detail["version"] == 2
    correction = Correction.objects.get()
    assert (correction.old_text, correction.new_text, correction.step_index) == (SCRIPT_STEPS[2], "3. 37 + 8 = 45", 2)
    assert AuditEvent.objects.filter(action="correction.created", data__branch=branch_id).exists()


def test_stale_edit_gets_a_conflict_and_changes_nothing(live):
    trace_id = _create_trace(live)

    async def scenario():
        first = await Socket.open(live, trace_id, user="supervisor", last_seq=0)
        await first.until(finished)
        second = await Socket.open(live, trace_id, user="owner")
        version = (await second.recv())["trace"]["version"]
        ok = await first.act(action="edit", step_index=1, text="2. 42 - 5 = 37 indeed", expected_version=version)
        stale = await second.act(action="edit", step_index=1, text="2. something else", expected_version=version)
        await first.close()
        await second.close()
        return ok, stale

    ok, stale = asyncio.run(scenario())
    assert ok["type"] == "ack"
    assert stale["type"] == "error" and stale["code"] == "stale_version" and stale["errors"]["current_version"] == 2
    assert Correction.objects.count() == 1 and Trace.objects.filter(parent_id=trace_id).count() == 1


def test_resume_after_a_dropped_connection_gets_exactly_what_was_missed(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS[:25], "done"), chunk_size=4, delay_s=0.01) as fake:
        trace = _queued_trace(live, _vllm_model(live, fake))

        async def scenario():
            reference = await Socket.open(live, trace.pk, user="viewer")
            dropper = await Socket.open(live, trace.pk, user="supervisor")
            await reference.recv()
            await dropper.recv()
            await dropper.act(action="start")
            await dropper.until(lambda e: e["type"] == "trace.step" and e["step"]["index"] == 3)
            await dropper.ws.close()  # the network drops
            last_seq = max(e["seq"] for e in dropper.sequenced())
            await asyncio.sleep(0.4)  # events keep flowing meanwhile
            resumed = await Socket.open(live, trace.pk, user="supervisor", last_seq=last_seq)
            await resumed.until(finished)
            await reference.until(finished)
            await resumed.close()
            await reference.close()
            return reference, dropper, resumed

        reference, dropper, resumed = asyncio.run(scenario())
    got = [(e["seq"], e["type"], e.get("text")) for e in dropper.sequenced() + resumed.sequenced()]
    want = [(e["seq"], e["type"], e.get("text")) for e in reference.sequenced()]
    assert resumed.events[0]["type"] != "snapshot"  # a resume, not a restart
    assert got == want


def test_bad_input_gets_an_error_and_the_socket_stays_open(live):
    trace_id = _create_trace(live)

    async def scenario():
        ws = await Socket.open(live, trace_id, user="supervisor", last_seq=0)
        await ws.until(finished)
        replies = {}
        await ws.ws.send("{not json")
        replies["bad_json"] = await ws.until(lambda e: e["type"] == "error")
        await ws.ws.send('["a list"]')
        replies["bad_message"] = await ws.until(lambda e: e["type"] == "error")
        replies["unknown_action"] = await ws.act(action="explode")
        replies["wrong_type"] = await ws.act(action="label", step_index="two", rating=1)
        replies["bad_rating"] = await ws.act(action="label", step_index=0, rating=5)
        replies["unknown_step"] = await ws.act(action="label", step_index=99, rating=1)
        replies["edit_unknown_step"] = await ws.act(action="edit", step_index=42, text="x", expected_version=1)
        replies["already_finished"] = await ws.act(action="stop")
        await ws.ws.send('{"action": "label", "note": "' + "x" * 70_000 + '"}')
        replies["too_large"] = await ws.until(lambda e: e["type"] == "error")
        replies["still_open"] = await ws.act(action="label", step_index=0, rating=1)
        await ws.close()
        return replies

    r = asyncio.run(scenario())
    assert r["bad_json"]["code"] == "bad_json"
    assert r["bad_message"]["code"] == "bad_message"
    assert r["unknown_action"]["code"] == "unknown_action"
    assert r["wrong_type"]["code"] == "bad_step"
    assert r["bad_rating"]["code"] == "bad_rating"
    assert r["unknown_step"]["code"] == "unknown_step"
    assert r["edit_unknown_step"]["code"] == "unknown_step"
    assert r["already_finished"]["code"] == "already_finished"
    assert r["too_large"]["code"] == "too_large"
    assert r["still_open"]["type"] == "ack" and r["still_open"]["label"]["rating"] == 1
    trace = Trace.objects.get(pk=trace_id)
    assert trace.steps.get(index=0).labels.count() == 1 and Trace.objects.count() == 1


def test_roles_on_the_socket(live):
    trace_id = _create_trace(live)

    async def scenario():
        viewer = await Socket.open(live, trace_id, user="viewer")
        snapshot = await viewer.recv()
        denied = await viewer.act(action="label", step_index=0, rating=1)
        await viewer.close()
        closes = {}
        for user in ("outsider", None):
            ws = await Socket.open(live, trace_id, user=user)
            with pytest.raises(Exception):
                await ws.recv(timeout=5)
            closes[user] = ws.ws.close_code
        bad_origin = None
        try:
            import websockets

            await websockets.connect(
                live.url(trace_id),
                additional_headers={"Origin": "http://evil.example", "Cookie": f"sessionid={live.cookies['viewer']}"},
            )
        except Exception as exc:  # the handshake is refused
            bad_origin = exc
        return snapshot, denied, closes, bad_origin

    snapshot, denied, closes, bad_origin = asyncio.run(scenario())
    assert snapshot["role"] == "viewer"
    assert denied["type"] == "error" and denied["code"] == "forbidden"
    assert closes == {"outsider": 4404, None: 4401}
    assert bad_origin is not None and "403" in str(bad_origin)
    assert not AuditEvent.objects.filter(action="step_label.set").exists()


def test_stop_and_continue_over_rest_continues_from_saved_steps(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS[:30], "done"), chunk_size=4, delay_s=0.01) as fake:
        trace = _queued_trace(live, _vllm_model(live, fake))
        api = _api(live)
        base = f"/api/projects/{live.project.pk}/traces/{trace.pk}"

        async def scenario():
            ws = await Socket.open(live, trace.pk, user="viewer")
            await ws.recv()
            start = await asyncio.to_thread(lambda: trace_start(trace=trace, actor=live.users["supervisor"]))
            assert start.status == "queued"
            await ws.until(lambda e: e["type"] == "trace.step" and e["step"]["index"] == 1)
            stop = await asyncio.to_thread(lambda: api.post(f"{base}/stop/"))
            assert stop.status_code == 200
            await ws.until(finished)
            saved = await asyncio.to_thread(_step_texts, trace.pk)
            cont = await asyncio.to_thread(lambda: api.post(f"{base}/continue/"))
            assert cont.status_code == 200 and cont.json()["status"] == "queued"
            await ws.until(lambda e: e["type"] == "trace.status" and e["status"] == "running")
            await ws.until(finished)
            await ws.close()
            return saved

        saved = asyncio.run(scenario())
        again = api.post(f"{base}/continue/")
        assert again.status_code == 409 and again.json()["code"] == "bad_state"
        continued = fake.requests[-1][1]
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert continued["messages"][-1] == {"role": "assistant", "content": render_completion(saved, None)}
    steps = _step_texts(trace.pk)
    assert steps[: len(saved)] == saved and len(steps) > len(saved)


def test_image_prompt_streams_through_a_tiny_vision_language_model(live, tiny_vlm):
    from annotator.services.prompts import image_check, prompt_image_add
    from tests.conftest import png_bytes

    vlm = ModelVersion.objects.create(project=live.project, name="vlm", base_model=str(tiny_vlm), path=str(tiny_vlm))
    prompt = Prompt.objects.create(project=live.project, messages=[{"role": "user", "content": "What is shown?"}])
    prompt_image_add(
        prompt=prompt, actor=live.users["owner"], image=image_check(name="a.png", data=png_bytes((32, 32)))
    )
    response = _api(live).post(
        f"/api/projects/{live.project.pk}/traces/",
        {"prompt": prompt.pk, "model_version": vlm.pk, "sampling_params": {"max_new_tokens": 12, "seed": 3}},
        format="json",
    )
    trace_id = response.json()["id"]

    async def scenario():
        ws = await Socket.open(live, trace_id, last_seq=0)
        done = await ws.until(finished, timeout=60)
        await ws.close()
        return done

    done = asyncio.run(scenario())
    trace = Trace.objects.get(pk=trace_id)
    assert done["status"] == "finished", trace.error
    assert PromptImage.objects.filter(prompt=prompt).count() == 1
    assert trace.prompt_tokens > 16  # the image's 16 patch tokens went into the prompt
    assert trace.completion_tokens == 12 or trace.finish_reason == "stop"


def test_a_viewer_joining_mid_stream_gets_a_snapshot_that_the_live_events_complete(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS[:20], "done"), chunk_size=4, delay_s=0.01) as fake:
        trace = _queued_trace(live, _vllm_model(live, fake), max_new_tokens=1000)

        async def scenario():
            first = await Socket.open(live, trace.pk, user="supervisor")
            await first.recv()
            await first.act(action="start")
            await first.until(lambda e: e["type"] == "trace.step" and e["step"]["index"] == 5)
            late = await Socket.open(live, trace.pk, user="viewer")  # no last_seq: a snapshot first
            snapshot = await late.recv()
            await late.until(finished)
            await first.close()
            await late.close()
            return snapshot, late

        snapshot, late = asyncio.run(scenario())
    assert snapshot["type"] == "snapshot" and snapshot["trace"]["status"] == "running"
    assert snapshot["me"]["username"] == "viewer" and snapshot["role"] == "viewer"
    steps = {s["index"]: s["text"] for s in snapshot["trace"]["steps"]}
    assert len(steps) >= 6
    live_events = late.sequenced()
    assert live_events[0]["seq"] == snapshot["seq"] + 1  # the live stream continues the snapshot exactly
    for event in live_events:
        if event["type"] == "trace.step":
            steps[event["step"]["index"]] = event["step"]["text"]
    assert [steps[i] for i in sorted(steps)] == SLOW_STEPS[:20] == _step_texts(trace.pk)
    # The open step in the snapshot is the beginning of the step that closes next.
    next_step = next(e["step"]["text"] for e in live_events if e["type"] == "trace.step")
    assert next_step.startswith(snapshot["partial"])


def test_generation_goes_on_when_every_viewer_has_left(live):
    with FakeVLLM(completion=render_completion(SLOW_STEPS[:15], "done"), chunk_size=4, delay_s=0.01) as fake:
        trace = _queued_trace(live, _vllm_model(live, fake), max_new_tokens=1000)

        async def scenario():
            ws = await Socket.open(live, trace.pk, user="supervisor")
            await ws.recv()
            await ws.act(action="start")
            await ws.until(lambda e: e["type"] == "trace.step")
            await ws.close()  # the only viewer leaves after the first step
            for _ in range(300):
                status = await asyncio.to_thread(lambda: Trace.objects.get(pk=trace.pk).status)
                if status != "running":
                    return status
                await asyncio.sleep(0.1)
            return "still running"

        status = asyncio.run(scenario())
    assert status == "finished"
    assert _step_texts(trace.pk) == SLOW_STEPS[:15]
    assert Trace.objects.get(pk=trace.pk).final_answer == "done"
