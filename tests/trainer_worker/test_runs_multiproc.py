"""Training on more than one process through the real train worker: a run with ``num_processes: 2``
is launched under ``accelerate launch`` on this CPU-only machine (2 ranks over gloo). Its model is
registered once and generates; cancel ends it ``cancelled``; a rank that dies ends it ``failed``
with that rank named; a bad ``num_processes`` is refused by REST. No test leaves a rank running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from annotator.models import MetricPoint, ModelVersion, TrainingRun
from tests.trainer_worker.conftest import TINY_CONFIG, build_corpus, ready_snapshot, wait_for, wait_run

TWO = {**TINY_CONFIG, "num_processes": 2, "eval": {"max_prompts": 1, "max_new_tokens": 8}}


@pytest.fixture
def owner_api(users) -> APIClient:
    client = APIClient()
    client.force_authenticate(users["owner"])
    return client


def _start(api, project, base, snapshot, **config) -> int:
    body = {"stage": "sft", "base_model": base.pk, "snapshots": [snapshot.pk], "config": {**TWO, **config}}
    response = api.post(f"/api/projects/{project.pk}/runs/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def rank_processes(run_folder: Path) -> dict[int, int]:
    """{rank: pid} of the run's live rank processes (found through /proc: their command line names
    the run's launch spec and their environment carries RANK)."""
    spec = str(run_folder / "launch" / "spec.json")
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if spec.encode() not in cmdline or b"accelerate.commands.launch" in cmdline:
                continue
            environ = dict(
                item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item
            )
            if (entry / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue  # a zombie waiting for its parent: it has ended
        except OSError:
            continue  # ended while we looked
        if b"RANK" in environ:
            ranks[int(environ[b"RANK"])] = int(entry.name)
    return ranks


def _no_rank_left(folder: Path) -> None:
    wait_for(lambda: not rank_processes(folder), timeout=20, what="the ranks to end")


@pytest.mark.slow
def test_two_process_sft_run_registers_one_model_that_generates(transactional_db, studio, train_worker, project,
                                                                 users, base_version, owner_api):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_corpus(project, users["owner"])
    run_id = _start(owner_api, project, base_version, ready_snapshot(project, users["owner"], "sft"), max_steps=4)
    run = wait_run(run_id, {"succeeded", "failed", "cancelled"}, timeout=180, worker=train_worker)
    assert run.status == "succeeded", f"{run.error}\n{run.log}"
    assert "Trained on 2 processes (gloo backend)" in run.log, run.log
    assert run.log.count("Training (full") == 1  # rank 0 alone reports
    folder = Path(studio.MODEL_STORE) / "runs" / str(run_id)
    _no_rank_left(folder)

    # Progress and metrics as from one process: every step once, loss at each.
    assert run.progress == 1.0
    loss_steps = list(MetricPoint.objects.filter(run_id=run_id, name="loss").values_list("step", flat=True))
    assert sorted(loss_steps) == [1, 2, 3, 4]

    # Exactly one model version, registered from rank 0's checkpoint, which loads and generates.
    versions = ModelVersion.objects.filter(produced_by_id=run_id)
    assert versions.count() == 1
    version = versions.get()
    assert run.output_model_id == version.pk and version.parent_id == base_version.pk
    assert Path(version.path) == folder / "final"
    tokenizer = AutoTokenizer.from_pretrained(version.path)
    model = AutoModelForCausalLM.from_pretrained(version.path)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # It was evaluated like any run's model.
    evals = owner_api.get(f"/api/projects/{project.pk}/models/{version.pk}/evals/").json()
    assert any(e["metric"] == "accuracy" for e in evals), evals


@pytest.mark.slow
def test_cancel_of_a_two_process_run_ends_it_cancelled(transactional_db, studio, train_worker, project, users,
                                                       base_version, owner_api):
    build_corpus(project, users["owner"])
    run_id = _start(owner_api, project, base_version, ready_snapshot(project, users["owner"], "sft"),
                    max_steps=5000, save_steps=3)
    folder = Path(studio.MODEL_STORE) / "runs" / str(run_id)
    wait_for(lambda: MetricPoint.objects.filter(run_id=run_id, step__gte=3).exists(), timeout=120,
             what="training to pass step 3")
    assert set(rank_processes(folder)) == {0, 1}

    response = owner_api.post(f"/api/projects/{project.pk}/runs/{run_id}/cancel/")
    assert response.status_code == 200, response.content
    run = wait_run(run_id, {"cancelled", "succeeded", "failed"}, timeout=30, worker=train_worker)
    assert run.status == "cancelled", f"{run.error}\n{run.log}"
    assert not ModelVersion.objects.filter(produced_by_id=run_id).exists() and run.output_model_id is None
    assert not (folder / "final").exists()
    assert list(folder.glob("checkpoint-*"))  # the partial checkpoints stay, as with one process
    _no_rank_left(folder)


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_and_names_it(transactional_db, studio, train_worker, project, users,
                                                     base_version, owner_api):
    build_corpus(project, users["owner"])
    run_id = _start(owner_api, project, base_version, ready_snapshot(project, users["owner"], "sft"),
                    max_steps=5000, save_steps=1000)
    folder = Path(studio.MODEL_STORE) / "runs" / str(run_id)
    wait_for(lambda: MetricPoint.objects.filter(run_id=run_id, step__gte=2).exists(), timeout=120,
             what="training to pass step 2")
    os.kill(rank_processes(folder)[1], signal.SIGKILL)  # as the kernel's OOM killer would

    run = wait_run(run_id, {"failed", "succeeded", "cancelled"}, timeout=60, worker=train_worker)
    assert run.status == "failed"
    assert "rank 1 of 2 was killed by SIGKILL" in run.error, run.error
    response = owner_api.get(f"/api/projects/{project.pk}/runs/{run_id}/")
    assert "rank 1 of 2" in response.json()["error"]
    assert not ModelVersion.objects.filter(produced_by_id=run_id).exists()
    _no_rank_left(folder)


@pytest.mark.parametrize("value", [0, 65, "2", True, 1e30, -1, 2.0])
def test_bad_num_processes_is_refused(studio, client_for, project, users, base_version, value):
    build_corpus(project, users["owner"])
    snapshot = ready_snapshot(project, users["owner"], "sft")
    body = {"stage": "sft", "base_model": base_version.pk, "snapshots": [snapshot.pk],
            "config": {**TINY_CONFIG, "num_processes": value}}
    response = client_for("owner").post(f"/api/projects/{project.pk}/runs/", body, format="json")
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["code"] == "invalid"
    assert any("num_processes must be an integer from 1 to 64" in e for e in answer["errors"]), answer
    assert not TrainingRun.objects.exists()


@pytest.mark.slow
def test_killed_worker_takes_its_ranks_with_it_and_the_run_resumes_once(transactional_db, studio, studio_dirs,
                                                                         worker_tmp, project, users, base_version):
    """SIGKILL to the train worker (a crash): its ranks end too (nothing keeps training unowned),
    and another worker resumes the run on 2 processes from the last checkpoint; one model."""
    from annotator.flags import owner_alive
    from annotator.services.training.runs import run_create
    from tests.support.live import start_worker
    from tests.trainer_worker.conftest import HEARTBEAT_S, SESSION, worker_env

    steps = 160
    queue = f"train-mp-kill-{SESSION}"
    studio.CELERY_TRAIN_QUEUE = queue  # this run goes to the victim, not the session worker
    victim = start_worker(worker_tmp, queues=queue, name=f"mpvictim-{SESSION}", pool="prefork", concurrency=1,
                          **worker_env(studio_dirs, queue=queue))
    rescuer = None
    try:
        build_corpus(project, users["owner"])
        run = run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                         snapshots=[ready_snapshot(project, users["owner"], "sft")],
                         config={**TWO, "max_steps": steps, "save_steps": 20, "logging_steps": 5})
        folder = Path(studio.MODEL_STORE) / "runs" / str(run.pk)
        # Kill once the worker has recorded step 20's loss too: a point rank 0 wrote in the moment
        # before the kill, not yet read by the worker, is lost (the resumed launch starts at 21).
        wait_for(lambda: (folder / "checkpoint-20" / "trainer_state.json").exists()
                 and MetricPoint.objects.filter(run=run, name="loss", step=20).exists(), timeout=120,
                 what="a checkpoint at step 20 and its loss")
        assert set(rank_processes(folder)) == {0, 1}

        victim.kill()
        killed_at = max(MetricPoint.objects.filter(run=run).values_list("step", flat=True))
        assert killed_at < steps, "the run finished before the kill; make it longer"
        _no_rank_left(folder)  # the launcher got its parent-death signal and ended them
        wait_for(lambda: not owner_alive(run.pk), timeout=HEARTBEAT_S + 3, what="the heartbeat to expire")

        rescuer = start_worker(worker_tmp, queues=queue, name=f"mprescuer-{SESSION}", pool="prefork",
                               concurrency=1, **worker_env(studio_dirs, queue=queue))
        run = wait_run(run.pk, {"succeeded", "failed", "cancelled"}, timeout=180, worker=rescuer)
        assert run.status == "succeeded", f"{run.error}\n{run.log}"
        assert run.worker.startswith("mprescuer-") and "Resuming from checkpoint-" in run.log
        assert run.log.count("Trained on 2 processes (gloo backend)") == 1  # the rescuer's launch
        loss_steps = sorted(set(MetricPoint.objects.filter(run=run, name="loss").values_list("step", flat=True)))
        assert loss_steps == list(range(5, steps + 1, 5))
        assert ModelVersion.objects.filter(produced_by=run).count() == 1
        _no_rank_left(folder)
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()
