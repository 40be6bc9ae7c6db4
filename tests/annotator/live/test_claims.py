"""Claims on live traces over real sockets: one controller at a time, others watch and ask, an
action without the claim answers not_controller and changes nothing, the claim lapses when idle.
And the project socket: a review reaches every open queue."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from annotator.models import Membership, ModelVersion, Role, Trace
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

STEPS = [f"{i}. step number {i} of a long derivation" for i in range(1, 81)]


def _second_supervisor(live, name: str = "ann") -> None:
    user = get_user_model().objects.create_user(username=name, password="pw-long-enough-123")
    Membership.objects.create(project=live.project, user=user, role=Role.SUPERVISOR)
    live.users[name] = user
    client = Client()
    client.force_login(user)
    live.cookies[name] = client.cookies["sessionid"].value


def test_one_controller_at_a_time_over_two_sockets(live):
    _second_supervisor(live)
    with FakeVLLM(completion=render_completion(STEPS, "done"), chunk_size=4, delay_s=0.02) as fake:
        model = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                            backend_options={"base_url": fake.base_url})
        trace = Trace.objects.create(project=live.project, prompt=live.prompt, model_version=model,
                                     sampling_params={"temperature": 0, "max_new_tokens": 2000})

        async def scenario():
            a = await Socket.open(live, trace.pk, user="supervisor")
            b = await Socket.open(live, trace.pk, user="ann")
            assert (await a.recv())["controller"] is None
            await b.recv()
            assert (await a.act(action="start"))["type"] == "ack"
            claimed = await b.until(lambda e: e["type"] == "trace.claimed")
            await b.until(lambda e: e["type"] == "trace.step" and e["step"]["index"] == 1)
            refused_stop = await b.act(action="stop")
            await asyncio.sleep(0.3)
            running = await asyncio.to_thread(lambda: Trace.objects.get(pk=trace.pk).status)
            assert (await a.act(action="stop"))["type"] == "ack"
            await a.until(finished, timeout=5)
            refused_continue = await b.act(action="continue")
            stopped = await asyncio.to_thread(lambda: Trace.objects.get(pk=trace.pk).status)
            asked = await b.act(action="request_control")
            request = await a.until(lambda e: e["type"] == "control.requested")
            assert (await a.act(action="release"))["type"] == "ack"
            released = await b.until(lambda e: e["type"] == "trace.released")
            taken = await b.act(action="continue")
            await b.until(lambda e: e["type"] == "trace.status" and e["status"] == "running")
            # the claim lapses after the project's idle time: then the other supervisor may act
            await asyncio.to_thread(lambda: type(live.project).objects.filter(pk=live.project.pk)
                                    .update(claim_idle_s=1))
            await b.act(action="claim")  # refreshed with the new, short idle time
            too_soon = await a.act(action="stop")
            await asyncio.sleep(1.3)
            after_lapse = await a.act(action="stop")
            await a.until(finished, timeout=5)
            await a.close()
            await b.close()
            return claimed, refused_stop, running, refused_continue, stopped, asked, request, released, taken, \
                too_soon, after_lapse

        (claimed, refused_stop, running, refused_continue, stopped, asked, request, released, taken, too_soon,
         after_lapse) = asyncio.run(scenario())
    assert claimed["controller"]["username"] == "supervisor" and claimed["idle_s"] == 120
    assert refused_stop["type"] == "error" and refused_stop["code"] == "not_controller"
    assert refused_stop["errors"]["controller"]["username"] == "supervisor"
    assert running == "running"  # the refused stop changed nothing
    assert refused_continue["code"] == "not_controller" and stopped == "stopped"
    assert asked["type"] == "ack" and asked["controller"]["user"]["username"] == "supervisor"
    assert request["by"]["username"] == "ann"
    assert released["by"]["username"] == "supervisor"
    assert taken["type"] == "ack"
    assert too_soon["code"] == "not_controller"
    assert after_lapse["type"] == "ack"
    assert Trace.objects.get(pk=trace.pk).status == "stopped"


def test_rest_control_actions_take_the_claim_too(live):
    _second_supervisor(live)
    with FakeVLLM(completion=render_completion(STEPS, "done"), chunk_size=4, delay_s=0.02) as fake:
        model = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                            backend_options={"base_url": fake.base_url})
        ann, sup = APIClient(), APIClient()
        ann.force_authenticate(live.users["ann"])
        sup.force_authenticate(live.users["supervisor"])
        created = sup.post(f"/api/projects/{live.project.pk}/traces/", {"prompt": live.prompt.pk,
                                                                        "model_version": model.pk}, format="json")
        trace_id = created.json()["id"]
        base = f"/api/projects/{live.project.pk}/traces/{trace_id}"
        refused = ann.post(f"{base}/stop/")
        assert refused.status_code == 409 and refused.json()["code"] == "not_controller"
        assert sup.get(f"{base}/controller/").json()["user"]["username"] == "supervisor"
        assert sup.post(f"{base}/stop/").status_code == 200

        async def wait():
            ws = await Socket.open(live, trace_id, user="viewer", last_seq=0)
            await ws.until(finished)
            await ws.close()

        asyncio.run(wait())
        edit = ann.post(f"{base}/corrections/", {"step_index": 0, "text": "1. mine", "expected_version": 1},
                        format="json")
        assert edit.status_code == 409 and edit.json()["code"] == "not_controller"
        assert not Trace.objects.filter(parent_id=trace_id).exists()


def test_a_review_reaches_every_open_queue(live):
    trace = Trace.objects.create(project=live.project, prompt=live.prompt, model_version=live.model,
                                 status="finished", final_answer="45")
    url = f"ws://{live.addr}/ws/projects/{live.project.pk}/"

    async def scenario():
        ws = await websockets.connect(url, additional_headers=live.headers("viewer"))
        hello = json.loads(await ws.recv())
        client = APIClient()
        client.force_authenticate(live.users["supervisor"])
        response = await asyncio.to_thread(
            client.put, f"/api/projects/{live.project.pk}/traces/{trace.pk}/reviews/", {"verdict": "accept"},
            format="json")
        assert response.status_code == 200
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.close()
        outsider = await websockets.connect(url, additional_headers=live.headers("outsider"))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(outsider.recv(), 10)
        return hello, event, closed.value.rcvd.code

    hello, event, code = asyncio.run(scenario())
    assert hello["type"] == "hello" and hello["role"] == "viewer"
    assert event["type"] == "queue.reviewed" and event["trace"] == trace.pk and event["verdict"] == "accept"
    assert event["by"]["username"] == "supervisor" and event["review_count"] == 1
    assert code == 4404
