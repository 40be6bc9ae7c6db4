"""Supervising at human pace (issue 12): paced and step modes, live step scores, auto-pause, and a
stop after the end that says so. Real Daphne, a real Celery generate worker, PostgreSQL and Valkey;
the traces come from the scripted tiny model (a real transformers model) or, where the test needs
an exact chunking, from tests/support/fake_vllm.py (a protocol stand-in for vLLM, which needs CUDA).

The scripted model writes "3. 37 + 8 = 44" for "Compute 12 + 30 - 5 + 8." (the demo task's prompt,
whose right step is 37 + 8 = 45), so the demo task's rule checker rates its third step wrong.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from rest_framework.test import APIClient

from annotator.models import ModelVersion, StepLabel, Trace
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM
from trainer_worker.vocabulary.format import render_completion

pytestmark = pytest.mark.slow

RULE = {"scorers": ["rule:demo_task"]}


def _api(live, user="supervisor") -> APIClient:
    client = APIClient()
    client.force_authenticate(live.users[user])
    return client


def _supervise(live, **settings) -> None:
    response = _api(live, "owner").patch(f"/api/projects/{live.project.pk}/", {"supervision": settings},
                                         format="json")
    assert response.status_code == 200, response.content
    assert response.json()["supervision"]["mode"] == settings.get("mode", "live")


def _create(live, **body) -> dict:
    response = _api(live).post(f"/api/projects/{live.project.pk}/traces/", {"prompt": live.prompt.pk, **body},
                               format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _detail(live, trace_id: int) -> dict:
    response = _api(live, "viewer").get(f"/api/projects/{live.project.pk}/traces/{trace_id}/")
    assert response.status_code == 200
    return response.json()


def _wait(live, trace_id: int, statuses=("finished", "stopped", "failed"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = _detail(live, trace_id)
        if detail["status"] in statuses:
            return detail
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} still {detail['status']}")


def _continue(live, trace_id: int, **body):
    return _api(live).post(f"/api/projects/{live.project.pk}/traces/{trace_id}/continue/", body, format="json")


def test_step_mode_pauses_at_the_end_of_every_step_until_accepted(live):
    trace = _create(live, mode="step")
    assert trace["mode"] == "step"
    seen = []
    for n in (1, 2):
        detail = _wait(live, trace["id"])
        # Paused, not finished: the model stopped at the end of step n and waits for the supervisor.
        assert (detail["status"], detail["finish_reason"]) == ("stopped", "step")
        assert len(detail["steps"]) == n
        assert f"step {n} is written" in detail["pause_reason"]
        seen.append(detail["steps"][-1]["text"])
        assert _continue(live, trace["id"]).status_code == 200  # accept the step
    # "Run to the end": the rest streams without pausing.
    detail = _wait(live, trace["id"])
    assert detail["status"] == "stopped" and len(detail["steps"]) == 3
    response = _continue(live, trace["id"], mode="live")
    assert response.status_code == 200 and response.json()["mode"] == "live"
    detail = _wait(live, trace["id"])
    assert detail["status"] == "finished" and detail["pause_reason"] == ""
    assert [s["text"] for s in detail["steps"]][:2] == seen
    assert len(detail["steps"]) == 5 and detail["final_answer"] == "44"


def test_paced_delivery_lets_a_supervisor_stop_at_a_step_before_the_model_is_done(live):
    # 10 steps at 4 characters a token, 20 tokens a second: about 6 s to deliver in full (live: ~0.1 s).
    steps = [f"{i}. step {i} of ten" for i in range(1, 11)]
    with FakeVLLM(completion=render_completion(steps, "done"), chunk_size=4) as fake:
        model = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                            backend_options={"base_url": fake.base_url})

        async def scenario():
            trace = await asyncio.to_thread(_create, live, mode="paced", pace_tps=20, model_version=model.pk)
            ws = await Socket.open(live, trace["id"], user="supervisor", last_seq=0)
            started = time.monotonic()
            await ws.until(lambda e: e.get("type") == "trace.step" and e["step"]["index"] == 1, timeout=20)
            at_step_2 = time.monotonic() - started
            stop = await ws.act(action="stop")
            await ws.until(finished, timeout=10)
            await ws.close()
            return trace["id"], at_step_2, stop, ws

        trace_id, at_step_2, stop, ws = asyncio.run(scenario())
    assert stop["type"] == "ack"
    # Two steps of about 17 characters reached the viewer no sooner than the pace allows.
    assert at_step_2 >= 0.8 * (len("".join(steps[:2])) / 4) / 20
    detail = _detail(live, trace_id)
    assert (detail["status"], detail["finish_reason"]) == ("stopped", "cancelled")
    assert detail["mode"] == "paced" and detail["pace_tps"] == 20
    # The stop acted on what the supervisor had seen: not the whole chain the model had written.
    assert 2 <= len(detail["steps"]) < 10
    tokens = "".join(e["text"] for e in ws.sequenced() if e["type"] == "trace.token")
    assert all(s["text"] in tokens for s in detail["steps"])


def test_every_closed_step_is_scored_live_and_a_wrong_step_pauses_the_trace(live):
    _supervise(live, mode="live", scorers=["rule:demo_task"], pause_below=0.5)

    async def scenario():
        trace = await asyncio.to_thread(_create, live)
        ws = await Socket.open(live, trace["id"], user="viewer", last_seq=0)
        await ws.until(finished, timeout=60)
        await ws.close()
        return trace["id"], ws

    trace_id, ws = asyncio.run(scenario())
    scored = [s for e in ws.sequenced() if e["type"] == "trace.score" for s in e["scores"]]
    assert [(s["step_index"], s["score"]) for s in scored] == [(0, 1.0), (1, 1.0), (2, 0.0)]
    # Each score arrives right after its step, before the next step.
    kinds = [(e["type"], e.get("step", {}).get("index")) for e in ws.sequenced() if e["type"] != "trace.token"]
    assert kinds.index(("trace.score", None)) == kinds.index(("trace.step", 0)) + 1
    detail = _detail(live, trace_id)
    assert (detail["status"], detail["finish_reason"]) == ("stopped", "auto_pause")
    assert len(detail["steps"]) == 3  # paused at the wrong step: nothing after it
    assert "rule checker (rule-based) scored step 3 0.00" in detail["pause_reason"]
    assert "below the project's threshold 0.50" in detail["pause_reason"]
    end = [e for e in ws.sequenced() if e["type"] == "trace.status"][-1]
    assert end["pause_reason"] == detail["pause_reason"]
    assert [(s["step_index"], s["scorer"], s["score"], s["detail"]) for s in detail["scores"]] == [
        (0, "rule:demo_task", 1.0, "the next right step"),
        (1, "rule:demo_task", 1.0, "the next right step"),
        (2, "rule:demo_task", 0.0, "wrong"),
    ]
    # Machine scores are never human labels.
    assert not StepLabel.objects.filter(step__trace_id=trace_id).exists()
    assert all(s["labels"] == [] for s in detail["steps"])
    # Continuing after the pause is the supervisor's choice: it runs on to the end (every step after a
    # wrong one scores low too, and would pause it again at once).
    assert _continue(live, trace_id).status_code == 200
    detail = _wait(live, trace_id)
    assert detail["status"] == "finished" and len(detail["steps"]) == 5


def test_without_a_threshold_the_trace_runs_on_and_its_answer_is_scored(live):
    _supervise(live, mode="live", scorers=["rule:demo_task"])
    trace = _create(live)
    detail = _wait(live, trace["id"])
    assert detail["status"] == "finished"
    assert [s["score"] for s in detail["scores"] if s["step_index"] >= 0] == [1.0, 1.0, 0.0, 0.0, 0.0]
    answer = [s for s in detail["scores"] if s["step_index"] == -1]
    assert [(a["score"], a["detail"]) for a in answer] == [(0.0, "not the reference")]  # 44, not 45


def test_a_stop_after_the_end_says_already_finished_on_rest_and_socket(live):
    trace = _create(live, mode="live")
    _wait(live, trace["id"], statuses=("finished",))
    response = _api(live).post(f"/api/projects/{live.project.pk}/traces/{trace['id']}/stop/")
    assert response.status_code == 409
    assert response.json()["code"] == "already_finished"
    assert "already ended (finished)" in response.json()["detail"]

    async def scenario():
        ws = await Socket.open(live, trace["id"], user="supervisor")
        await ws.recv()  # the snapshot
        answer = await ws.act(action="stop")
        await ws.close()
        return answer

    answer = asyncio.run(scenario())
    assert (answer["type"], answer["code"]) == ("error", "already_finished")
    assert Trace.objects.get(pk=trace["id"]).status == "finished"  # nothing changed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "fast"}, "mode"),
        ({"mode": ["live"]}, "mode"),
        ({"mode": "paced", "pace_tps": 0}, "pace_tps"),
        ({"mode": "paced", "pace_tps": 1e300}, "pace_tps"),
        ({"mode": "paced", "pace_tps": "fast"}, "pace_tps"),
    ],
)
def test_a_bad_mode_or_pace_is_a_400_and_creates_nothing(live, body, field):
    before = Trace.objects.count()
    response = _api(live).post(f"/api/projects/{live.project.pk}/traces/", {"prompt": live.prompt.pk, **body},
                               format="json")
    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert Trace.objects.count() == before


@pytest.mark.parametrize(
    "supervision",
    [
        {"mode": "turbo"},
        {"pace_tps": -1},
        {"scorers": ["gpt:4"]},
        {"scorers": ["prm:999999"]},  # not a model version of this project
        {"scorers": "rule:demo_task"},
        {"pause_below": 2},
        {"pause_below": "half"},
        {"speed": 3},
        [],
    ],
)
def test_bad_supervision_settings_are_refused_and_the_old_ones_kept(live, supervision):
    _supervise(live, mode="step", **RULE)
    response = _api(live, "owner").patch(f"/api/projects/{live.project.pk}/", {"supervision": supervision},
                                         format="json")
    assert response.status_code == 400, response.content
    live.project.refresh_from_db()
    assert live.project.supervision["mode"] == "step"
    # A supervisor may not change them at all.
    response = _api(live, "supervisor").patch(f"/api/projects/{live.project.pk}/", {"supervision": {}},
                                              format="json")
    assert response.status_code == 403


def test_a_new_trace_takes_the_projects_mode_and_a_branch_its_parents(live):
    _supervise(live, mode="paced", pace_tps=500)
    trace = _create(live)
    assert (trace["mode"], trace["pace_tps"]) == ("paced", 500)
    detail = _wait(live, trace["id"])
    response = _api(live).post(
        f"/api/projects/{live.project.pk}/traces/{trace['id']}/corrections/",
        {"step_index": 2, "text": "3. 37 + 8 = 45", "expected_version": detail["version"]}, format="json",
    )
    assert response.status_code == 201, response.content
    branch = Trace.objects.get(pk=response.json()["corrected_trace"])
    assert (branch.mode, branch.pace_tps) == ("paced", 500)
    bad = _continue(live, trace["id"], mode="warp")
    assert bad.status_code == 400


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory) -> str:
    """A PRM trained the studio's way (stage ``prm``, TRL token classification at step separators) on
    step labels of the scripted chain: steps 1-2 good, step 3 (37 + 8 = 44) wrong."""
    import datasets

    from tests.support.models import SCRIPT_STEPS
    from trainer_worker.training.config import StageConfig
    from trainer_worker.training.runner import run_stage
    from trainer_worker.training.tiny import build_tiny_lm

    tmp = tmp_path_factory.mktemp("prm")
    base = build_tiny_lm(tmp / "base", hidden_size=32, layers=1, heads=2)
    rows = [{"prompt": "Compute 12 + 30 - 5 + 8.", "completions": SCRIPT_STEPS[:3], "labels": [True, True, False]}] * 8
    config = StageConfig(stage="prm", base_model_path=str(base), output_dir=str(tmp / "out"),
                         dataset_path=datasets.Dataset.from_list(rows), max_steps=2, logging_steps=1, save_steps=2,
                         max_length=96, per_device_batch_size=2, learning_rate=1e-3)
    return run_stage(config).output_path


def test_a_prm_trained_in_the_studio_scores_each_step_live_with_its_model_version(live, tiny_prm):
    prm = ModelVersion.objects.create(project=live.project, name="prm", base_model=tiny_prm, path=tiny_prm)
    _supervise(live, mode="live", scorers=[f"prm:{prm.pk}"])

    async def scenario():
        trace = await asyncio.to_thread(_create, live)
        ws = await Socket.open(live, trace["id"], user="viewer", last_seq=0)
        await ws.until(finished, timeout=60)
        await ws.close()
        return trace["id"], ws

    trace_id, ws = asyncio.run(scenario())
    live_scores = [s for e in ws.sequenced() if e["type"] == "trace.score" for s in e["scores"]]
    detail = _detail(live, trace_id)
    assert detail["status"] == "finished"
    # Every step, none for the answer (a PRM scores steps), each with the PRM's model version.
    assert [s["step_index"] for s in live_scores] == [0, 1, 2, 3, 4]
    assert all(s["scorer"] == f"prm:{prm.pk}" and s["model_version"] == prm.pk and 0 < s["score"] < 1
               for s in live_scores)
    assert sorted((s["step_index"], s["score"]) for s in detail["scores"]) == [
        (s["step_index"], s["score"]) for s in live_scores]
    assert StepLabel.objects.filter(step__trace_id=trace_id).count() == 0  # machine scores, never labels
