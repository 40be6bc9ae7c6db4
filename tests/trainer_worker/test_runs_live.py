"""Training runs through a real Celery train worker: every stage end to end from snapshots built by
the snapshot service, metrics and progress, the run socket, evaluation, promotion, cancel and
auto-train. Rows must be committed for the worker to see them, hence `transactional_db`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from annotator.models import AuditEvent, EvalResult, MetricPoint, ModelVersion, Project, TrainingRun
from tests.trainer_worker.conftest import TINY_CONFIG, build_corpus, ready_snapshot, wait_for, wait_run

pytestmark = pytest.mark.slow

STAGE_KINDS = {
    "sft": "sft",
    "dpo": "preference_step",
    "reward": "preference",
    "verifier": "verifier_safety",
    "prm": "stepwise",
    "grpo": "rl_prompts",
}


@pytest.fixture
def owner_api(users) -> APIClient:
    client = APIClient()
    client.force_authenticate(users["owner"])
    return client


def _start(api, project, base, snapshot, stage, **config) -> int:
    body = {"stage": stage, "base_model": base.pk, "snapshots": [snapshot.pk], "config": {**TINY_CONFIG, **config}}
    if stage == "grpo":
        body["config"].update(num_generations=2, max_completion_length=16)
    response = api.post(f"/api/projects/{project.pk}/runs/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def test_every_stage_trains_through_a_worker(transactional_db, studio, train_worker, project, users, base_version,
                                             owner_api):
    build_corpus(project, users["owner"])
    runs = {}
    for stage, kind in STAGE_KINDS.items():
        runs[stage] = _start(owner_api, project, base_version, ready_snapshot(project, users["owner"], kind), stage)

    for stage, run_id in runs.items():
        run = wait_run(run_id, {"succeeded", "failed", "cancelled"}, timeout=120, worker=train_worker)
        assert run.status == "succeeded", f"{stage}: {run.error}\n{run.log}"
        assert run.progress == 1.0
        assert run.worker.startswith("train-")  # the worker's node name
        # Metrics: rows for each logged step, served by the metrics endpoint in step order.
        metrics = owner_api.get(f"/api/projects/{project.pk}/runs/{run_id}/metrics/").json()
        assert {m["step"] for m in metrics} >= {1, 2}, stage
        assert any(m["name"] == "loss" for m in metrics), (stage, metrics)
        # One model version, child of the base, produced by this run, whose files exist.
        version = ModelVersion.objects.get(produced_by_id=run_id)
        assert run.output_model_id == version.pk
        assert version.parent_id == base_version.pk
        assert (Path(version.path) / "config.json").exists()
        assert Path(version.path).is_relative_to(Path(studio.MODEL_STORE) / "runs" / str(run_id))

    # The generative stages are evaluated on the two held-out prompts; classifiers are not.
    for stage in ("sft", "dpo", "grpo"):
        version = ModelVersion.objects.get(produced_by_id=runs[stage])
        evals = owner_api.get(f"/api/projects/{project.pk}/models/{version.pk}/evals/").json()
        by_metric = {e["metric"]: e for e in evals}
        assert {"accuracy", "mean_cot_tokens", "format_rate"} <= set(by_metric), (stage, evals)
        assert 0.0 <= by_metric["accuracy"]["value"] <= 1.0
        assert by_metric["accuracy"]["details"]["n_verifiable"] == 2
        # And per class of prompt: the two held-out prompts are demo-task prompts with a class each.
        counts = {m.split(".")[0]: e["value"] for m, e in by_metric.items() if m.endswith(".n")}
        assert sum(counts.values()) == 2 and all(f"{k}.accuracy" in by_metric for k in counts), by_metric
    for stage in ("reward", "verifier", "prm"):
        assert not EvalResult.objects.filter(run_id=runs[stage]).exists()

    # The run's lifecycle is in the audit log.
    audit = AuditEvent.objects.filter(project=project, target_type="trainingrun")
    actions = set(audit.values_list("action", flat=True))
    assert {"training_run.created", "training_run.succeeded"} <= actions


def test_run_socket_streams_progress_and_metrics(transactional_db, studio, train_worker, project, users,
                                                 base_version):
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from annotator.routing import websocket_urlpatterns
    from annotator.services.training.runs import run_create

    build_corpus(project, users["owner"])
    snapshot = ready_snapshot(project, users["owner"], "sft")
    run = run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                     snapshots=[snapshot], config={**TINY_CONFIG, "max_steps": 4, "eval": {"max_prompts": 1}})

    async def watch(user, run_id):
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run_id}/")
        communicator.scope["user"] = user
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    async def scenario():
        outsider = await watch(users["outsider"], run.pk)
        closed = await outsider.receive_output(5)
        assert closed == {"type": "websocket.close", "code": 4404}
        viewer = await watch(users["viewer"], run.pk)
        snapshot_event = await viewer.receive_json_from(10)
        received = []
        while True:
            event = await viewer.receive_json_from(120)
            received.append(event)
            if event["type"] == "run.progress" and event["status"] in ("succeeded", "failed"):
                break
        await viewer.disconnect()
        return snapshot_event, received

    snapshot_event, received = asyncio.run(scenario())
    assert snapshot_event["type"] == "snapshot"
    assert snapshot_event["run"]["id"] == run.pk and snapshot_event["role"] == "viewer"
    assert received[-1]["status"] == "succeeded", received[-1]
    steps = sorted({e["step"] for e in received if e["type"] == "run.metrics"})
    assert steps == [1, 2, 3, 4]
    assert {e["step"] for e in received if e["type"] == "run.metrics" and "loss" in e["metrics"]} == {1, 2, 3, 4}
    progress = [e["progress"] for e in received if e["type"] == "run.progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(e["type"] == "run.log" and "Training" in e["line"] for e in received)

    # A late watcher gets the metrics so far in its snapshot.
    async def late():
        communicator = await watch(users["supervisor"], run.pk)
        event = await communicator.receive_json_from(10)
        await communicator.disconnect()
        return event

    event = asyncio.run(late())
    assert event["run"]["status"] == "succeeded"
    assert {(m["step"], m["name"]) for m in event["metrics"]} == set(
        MetricPoint.objects.filter(run=run).values_list("step", "name")
    )


def test_cancel_stops_a_running_run_after_the_step_in_flight(transactional_db, studio, train_worker, project,
                                                              users, base_version, owner_api):
    build_corpus(project, users["owner"])
    snapshot = ready_snapshot(project, users["owner"], "sft")
    run_id = _start(owner_api, project, base_version, snapshot, "sft", max_steps=5000, save_steps=3)
    wait_for(lambda: MetricPoint.objects.filter(run_id=run_id, step__gte=4).exists(), timeout=90,
             what="training to pass step 4")

    response = owner_api.post(f"/api/projects/{project.pk}/runs/{run_id}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelling"
    step_at_cancel = max(MetricPoint.objects.filter(run_id=run_id).values_list("step", flat=True))

    run = wait_run(run_id, {"cancelled", "succeeded", "failed"}, timeout=30, worker=train_worker)
    assert run.status == "cancelled"
    last_step = max(MetricPoint.objects.filter(run_id=run_id).values_list("step", flat=True))
    assert last_step <= step_at_cancel + 2  # the step in flight (and one logged as the cancel landed)
    assert run.output_model_id is None and not ModelVersion.objects.filter(produced_by_id=run_id).exists()
    folder = Path(studio.MODEL_STORE) / "runs" / str(run_id)
    assert not (folder / "final").exists()
    assert list(folder.glob("checkpoint-*"))  # the partial checkpoints stay for inspection
    # Cancelling again is a conflict; the run is over.
    again = owner_api.post(f"/api/projects/{project.pk}/runs/{run_id}/cancel/")
    assert again.status_code == 409


def test_promoted_run_output_serves_the_next_trace(transactional_db, studio, train_worker, project, users,
                                                    base_version, owner_api):
    from annotator.generation import local
    from annotator.models import Prompt, Trace
    from annotator.services import generation

    build_corpus(project, users["owner"])
    project.serving_model = base_version
    project.save(update_fields=["serving_model"])
    run_id = _start(owner_api, project, base_version, ready_snapshot(project, users["owner"], "sft"), "sft",
                    lora={"r": 4, "alpha": 8, "dropout": 0.0}, eval={"max_prompts": 1, "max_new_tokens": 8})
    run = wait_run(run_id, {"succeeded", "failed"}, timeout=120, worker=train_worker)
    assert run.status == "succeeded", run.error
    version = run.output_model
    assert version.adapter_path and (Path(version.path) / "config.json").exists()  # merged for the local backend

    response = owner_api.post(f"/api/projects/{project.pk}/models/{version.pk}/promote/")
    assert response.status_code == 200, response.content
    assert response.json()["serving_model"] == version.pk
    assert Project.objects.get(pk=project.pk).serving_model_id == version.pk
    assert AuditEvent.objects.filter(action="model_version.promoted", target_id=str(version.pk)).exists()

    # Generation runs in this process with the promoted model (studio's generate queue has no reader).
    prompt = Prompt.objects.filter(project=project).first()
    created = APIClient()
    created.force_authenticate(users["supervisor"])
    trace_id = created.post(f"/api/projects/{project.pk}/traces/", {"prompt": prompt.pk}, format="json").json()["id"]
    generation.trace_generate(trace_id=trace_id)
    trace = Trace.objects.get(pk=trace_id)
    assert trace.model_version_id == version.pk
    assert trace.status == "finished", trace.error
    assert trace.completion_tokens > 0
    assert local._key(version.path) in local._CACHE


def test_autotrain_fires_once_at_the_threshold(transactional_db, studio, train_worker, project, users,
                                               base_version):
    from annotator.models import Trace
    from annotator.services.corrections import correction_create
    from annotator.services.training.autotrain import autotrain_check
    from tests.factories import make_prompt, make_trace

    build_corpus(project, users["owner"])  # one correction already
    project.serving_model = base_version
    project.autotrain_policy = {"enabled": True, "every_n_corrections": 3, "stage": "sft", "snapshot_kind": "sft",
                                "config": {**TINY_CONFIG, "eval": {"max_prompts": 1, "max_new_tokens": 8}}}
    project.save(update_fields=["serving_model", "autotrain_policy"])

    prompt = make_prompt(project, actor=users["owner"])
    for i in range(5):  # crosses the threshold of 3 at the 2nd; three more checks follow
        trace = make_trace(project, prompt, steps=["1. 12 + 30 = 41"], answer="41")
        correction_create(trace=trace, step_index=0, text=f"1. 12 + 30 = 42 ({i})", author=users["supervisor"],
                          expected_version=trace.version)
    assert Trace.objects.filter(project=project, parent__isnull=False).count() == 6

    run = wait_for(lambda: TrainingRun.objects.filter(project=project, automatic=True).first(), timeout=60,
                   what="the automatic run")
    run = wait_run(run.pk, {"succeeded", "failed"}, timeout=120, worker=train_worker)
    assert run.status == "succeeded", run.error
    assert run.snapshots.get().kind == "sft"
    assert TrainingRun.objects.filter(project=project, automatic=True).count() == 1
    # No new corrections since that run: a later check starts nothing.
    assert autotrain_check(project_id=project.pk) is None
    assert TrainingRun.objects.filter(project=project).count() == 1


def test_a_base_model_is_evaluated_by_the_train_worker(transactional_db, studio, train_worker, project, users,
                                                       base_version, owner_api):
    """The demo project queues its base model's evaluation, so the comparison starts with a point."""
    from django.db import transaction

    from annotator.enqueue import EVALUATE_VERSION, enqueue_on_commit

    build_corpus(project, users["owner"])
    with transaction.atomic():
        enqueue_on_commit(EVALUATE_VERSION, version_id=base_version.pk)
    rows = wait_for(lambda: list(EvalResult.objects.filter(model_version=base_version, run__isnull=True)),
                    timeout=120, what="the base model's evaluation")
    answer = owner_api.get(f"/api/projects/{project.pk}/models/{base_version.pk}/evals/").json()
    evals = {e["metric"]: e for e in answer}
    assert {"accuracy", "mean_cot_tokens", "format_rate"} <= set(evals) and rows
    assert sum(e["value"] for m, e in evals.items() if m.endswith(".n")) == 2
