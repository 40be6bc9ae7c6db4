"""K alternatives at a step (issue 12): a supervisor asks for K candidate steps, sees them scored,
picks one (or writes their own), and the pick opens a branch and becomes preference data. Real
Daphne, a real Celery generate worker, PostgreSQL and Valkey. Candidates come from the scripted tiny
model (a real transformers model) or from tests/support/fake_vllm.py (a protocol stand-in for vLLM,
which needs CUDA) where the test needs known candidates.

The scripted model writes "3. 37 + 8 = 44" for "Compute 12 + 30 - 5 + 8."; the demo task's rule
checker says the right third step is 37 + 8 = 45."""

from __future__ import annotations

import asyncio
import time

import pytest
from rest_framework.test import APIClient

from annotator.datasets.corpus import build_corpus
from annotator.datasets.materialise import materialise
from annotator.models import AlternativeSet, ModelVersion, Step
from tests.annotator.live.conftest import Socket
from tests.support.fake_vllm import FakeVLLM
from tests.support.models import SCRIPT_STEPS

pytestmark = pytest.mark.slow

# Known candidates for step 2 (the third step), as a vLLM server would sample them.
SAMPLES = ["3. 37 + 8 = 45\n", "3. 37 + 8 = 44\n", "3. 37 + 9 = 46\n", "</think>\n44"]


def _api(live, user="supervisor") -> APIClient:
    client = APIClient()
    client.force_authenticate(live.users[user])
    return client


def _url(live, trace_id: int, tail: str = "") -> str:
    return f"/api/projects/{live.project.pk}/traces/{trace_id}/{tail}"


def _finished_trace(live, **body) -> dict:
    response = _api(live).post(f"/api/projects/{live.project.pk}/traces/", {"prompt": live.prompt.pk, **body},
                               format="json")
    assert response.status_code == 201, response.content
    return _wait(live, _url(live, response.json()["id"]), "status", ("finished", "stopped", "failed"))


def _wait(live, url: str, field: str, done: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _api(live, "viewer").get(url).json()
        if body[field] in done:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} still {body[field]}")


def _rule_scored(live) -> None:
    response = _api(live, "owner").patch(f"/api/projects/{live.project.pk}/",
                                         {"supervision": {"scorers": ["rule:demo_task"]}}, format="json")
    assert response.status_code == 200, response.content


def test_alternatives_are_scored_side_by_side_and_the_keyboard_pick_opens_a_branch(live):
    _rule_scored(live)
    trace = _finished_trace(live)
    assert [s["text"] for s in trace["steps"]] == SCRIPT_STEPS
    with FakeVLLM(samples=SAMPLES) as fake:
        served = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                             backend_options={"base_url": fake.base_url})
        live.project.serving_model = served
        live.project.save(update_fields=["serving_model"])
        from annotator.models import Trace

        Trace.objects.filter(pk=trace["id"]).update(model_version=served)

        async def scenario():
            ws = await Socket.open(live, trace["id"], user="supervisor", last_seq=0)
            asked = await ws.act(action="alternatives", step_index=2, k=4, seed=11)
            ready = await ws.until(lambda e: e.get("type") == "trace.alternatives" and e["set"]["status"] == "ready",
                                   timeout=30)
            picked = await ws.act(action="pick", set=ready["set"]["id"], candidate=0,
                                  expected_version=trace["version"])
            branch = await ws.until(lambda e: e.get("type") == "branch.created", timeout=10)
            await ws.close()
            return asked, ready["set"], picked, branch

        asked, ready, picked, branch = asyncio.run(scenario())
        (_, body), = [r for r in fake.requests if "stream" not in r[1]]
        # The branch continues from the same server: wait for its end before the server goes.
        detail = _wait(live, _url(live, picked["set"]["branch"]), "status", ("finished", "stopped", "failed"))
    assert asked["type"] == "ack" and asked["set"]["status"] == "queued" and asked["set"]["seed"] == 11
    # One batched request of n=4 that continues the first two steps and stops at the step boundary.
    assert body["n"] == 4 and body["seed"] == 11 and body["continue_final_message"] is True
    assert body["messages"][-1]["content"] == "<think>\n" + "\n".join(SCRIPT_STEPS[:2]) + "\n"
    # Side by side, each with the rule checker's score; the one that closes the reasoning says so.
    got = [(c["kind"], c["text"], [(s["scorer"], s["score"]) for s in c["scores"]]) for c in ready["candidates"]]
    assert got == [
        ("step", "3. 37 + 8 = 45", [("rule:demo_task", 1.0)]),
        ("step", "3. 37 + 8 = 44", [("rule:demo_task", 0.0)]),
        ("step", "3. 37 + 9 = 46", [("rule:demo_task", 0.0)]),
        ("end", "", []),
    ]
    assert picked["type"] == "ack", picked
    branch_id = picked["set"]["branch"]
    assert branch["branch"]["id"] == branch_id and branch["correction"]["new_text"] == "3. 37 + 8 = 45"
    # The branch shares steps 0-1, has the picked step (written by the model, not a human) and continues.
    step = Step.objects.get(trace_id=branch_id, index=2)
    assert (step.text, step.origin) == ("3. 37 + 8 = 45", "model")
    assert detail["parent"] == trace["id"] and detail["status"] == "finished", detail.get("error")
    # Step-level preference data: the correction's pair (picked vs the trace's own step 2), and the
    # pick's pair against each other candidate the model wrote (the trace's own step once, not twice).
    records = list(materialise("preference_step", build_corpus(live.project, kind="preference_step")))
    pairs = sorted((r["source"], r["chosen"][0]["content"].splitlines()[-1], r["rejected"][0]["content"]
                    .splitlines()[-1]) for r in records)
    assert pairs == [("alternatives", "3. 37 + 8 = 45", "3. 37 + 9 = 46"),
                     ("correction", "3. 37 + 8 = 45", "3. 37 + 8 = 44")]
    # After a reload the set is still there, picked.
    (shown,) = _api(live, "viewer").get(_url(live, trace["id"])).json()["alternatives"]
    assert (shown["picked"], shown["branch"], shown["picked_by"]) == (0, branch_id, live.users["supervisor"].pk)


def test_the_local_model_samples_k_candidates_in_one_batch_and_a_own_step_can_be_picked(live):
    _rule_scored(live)
    trace = _finished_trace(live)
    client = _api(live)
    response = client.post(_url(live, trace["id"], "alternatives/"), {"step_index": 2, "k": 3, "temperature": 0.01},
                           format="json")
    assert response.status_code == 202, response.content
    ready = _wait(live, _url(live, trace["id"], f"alternatives/{response.json()['id']}/"), "status",
                  ("ready", "failed"))
    assert ready["status"] == "ready", ready["error"]
    # Near-greedy: every row of the batch is the model's own third step, which the rule checker rates wrong.
    assert [(c["kind"], c["text"]) for c in ready["candidates"]] == [("step", SCRIPT_STEPS[2])] * 3
    assert all(c["scores"] == [{"scorer": "rule:demo_task", "score": 0.0, "detail": "wrong", "model_version": None}]
               for c in ready["candidates"])
    # None is right: the supervisor writes their own step instead; the branch's step is theirs.
    picked = client.post(_url(live, trace["id"], f"alternatives/{ready['id']}/pick/"),
                         {"text": "3. 37 + 8 = 45", "expected_version": trace["version"]}, format="json")
    assert picked.status_code == 200, picked.content
    step = Step.objects.get(trace_id=picked.json()["branch"], index=2)
    assert (step.text, step.origin) == ("3. 37 + 8 = 45", "human")
    # The branch continues from it (and ends before the test's database is flushed).
    branch = _wait(live, _url(live, picked.json()["branch"]), "status", ("finished", "stopped", "failed"))
    assert branch["status"] == "finished"


def test_bad_requests_and_picks_get_clear_errors_and_change_nothing(live):
    trace = _finished_trace(live)
    client = _api(live)
    url = _url(live, trace["id"], "alternatives/")
    for body, status, field in [({"step_index": 2, "k": 0}, 400, "k"), ({"step_index": 2, "k": 9}, 400, "k"),
                                ({"step_index": 2, "k": [4]}, 400, "k"), ({"step_index": -1}, 400, "step_index"),
                                ({"step_index": 2, "temperature": 0}, 400, "temperature")]:
        response = client.post(url, body, format="json")
        assert response.status_code == status and field in str(response.json()), (body, response.content)
    unknown = client.post(url, {"step_index": 5}, format="json")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_step")
    viewer = _api(live, "viewer").post(url, {"step_index": 1}, format="json")
    assert viewer.status_code == 403
    assert not AlternativeSet.objects.exists()

    with FakeVLLM(samples=SAMPLES) as fake:
        served = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                             backend_options={"base_url": fake.base_url})
        from annotator.models import Trace

        Trace.objects.filter(pk=trace["id"]).update(model_version=served)
        made = client.post(url, {"step_index": 2}, format="json").json()
        alt_url = _url(live, trace["id"], f"alternatives/{made['id']}/")
        ready = _wait(live, alt_url, "status", ("ready", "failed"))
    assert ready["status"] == "ready" and ready["k"] == 4, ready
    pick = alt_url + "pick/"
    version = trace["version"]
    for body, status, code in [
        ({"candidate": 7, "expected_version": version}, 404, "unknown_candidate"),
        ({"candidate": 3, "expected_version": version}, 409, "not_a_step"),  # it ends the reasoning
        ({"candidate": 0, "expected_version": version + 5}, 409, "stale_version"),
        ({"candidate": 0, "text": "both", "expected_version": version}, 400, "invalid"),
        ({"text": "two\nlines", "expected_version": version}, 400, "bad_step"),
    ]:
        response = client.post(pick, body, format="json")
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.content)
    assert _api(live, "viewer").get(alt_url).json()["picked"] is None
    first = client.post(pick, {"candidate": 0, "expected_version": version}, format="json")
    assert first.status_code == 200
    # The branch starts generating (the stand-in is gone, so it fails at once); let it end before
    # the test's database is flushed under it.
    _wait(live, _url(live, first.json()["branch"]), "status", ("finished", "stopped", "failed"))
    twice = client.post(pick, {"candidate": 2, "expected_version": version + 1}, format="json")
    assert (twice.status_code, twice.json()["code"]) == (409, "already_picked")
    missing = client.post(_url(live, trace["id"], "alternatives/999999/pick/"),
                          {"candidate": 0, "expected_version": version}, format="json")
    assert missing.status_code == 404


def test_a_socket_frame_for_alternatives_is_validated_like_rest(live):
    trace = _finished_trace(live)

    async def scenario():
        ws = await Socket.open(live, trace["id"], user="supervisor", last_seq=0)
        bad_k = await ws.act(action="alternatives", step_index=1, k=[4])
        unknown = await ws.act(action="alternatives", step_index=9)
        no_set = await ws.act(action="pick", set=123456, candidate=0, expected_version=1)
        bad_set = await ws.act(action="pick", set="x", candidate=0, expected_version=1)
        await ws.close()
        return bad_k, unknown, no_set, bad_set

    bad_k, unknown, no_set, bad_set = asyncio.run(scenario())
    assert bad_k["type"] == "error" and bad_k["code"] == "invalid" and "k" in bad_k["detail"]
    assert (unknown["type"], unknown["code"]) == ("error", "unknown_step")
    assert (no_set["type"], no_set["code"]) == ("error", "not_found")
    assert (bad_set["type"], bad_set["code"]) == ("error", "invalid")
    assert not AlternativeSet.objects.exists()
