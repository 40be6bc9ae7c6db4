"""A train worker killed mid-run (SIGKILL to its process group, as a crash): the run resumes from
its last checkpoint on another worker, once; a duplicate delivery to a live run does nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotator.models import MetricPoint, ModelVersion, TrainingRun
from tests.trainer_worker.conftest import (
    HEARTBEAT_S,
    SESSION,
    TINY_CONFIG,
    build_corpus,
    ready_snapshot,
    wait_for,
    wait_run,
    worker_env,
)

pytestmark = pytest.mark.slow

STEPS = 240


def test_killed_worker_run_resumes_from_its_checkpoint(transactional_db, studio, studio_dirs, worker_tmp, project,
                                                        users, base_version):
    from annotator.flags import owner_alive
    from annotator.services.training.runs import run_create
    from annotator.services.training.worker import run_execute
    from tests.support.live import start_worker

    queue = f"train-kill-{SESSION}"
    studio.CELERY_TRAIN_QUEUE = queue  # this run goes to the victim, not the session worker
    victim = start_worker(worker_tmp, queues=queue, name=f"victim-{SESSION}", pool="prefork", concurrency=1,
                          **worker_env(studio_dirs, queue=queue))
    rescuer = None
    try:
        build_corpus(project, users["owner"])
        snapshot = ready_snapshot(project, users["owner"], "sft")
        config = {**TINY_CONFIG, "max_steps": STEPS, "save_steps": 20, "logging_steps": 5,
                  "eval": {"max_prompts": 1, "max_new_tokens": 8}}
        run = run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                         snapshots=[snapshot], config=config)
        folder = Path(studio.MODEL_STORE) / "runs" / str(run.pk)
        # Saved to the end (the trainer state is written last); a kill mid-save would resume from 20.
        wait_for(lambda: (folder / "checkpoint-40" / "trainer_state.json").exists(), timeout=90,
                 what="a checkpoint at step 40")

        # A second delivery while the owner is alive (a long run outliving the visibility timeout).
        assert run_execute(run_id=run.pk, worker="intruder") is None
        running = TrainingRun.objects.get(pk=run.pk)
        assert running.status == "running" and running.worker.startswith("victim-")

        victim.kill()
        killed_at = max(MetricPoint.objects.filter(run=run).values_list("step", flat=True))
        assert killed_at < STEPS, "the run finished before the kill; make it longer"
        assert TrainingRun.objects.get(pk=run.pk).status == "running"  # nobody knows yet
        wait_for(lambda: not owner_alive(run.pk), timeout=HEARTBEAT_S + 3, what="the heartbeat to expire")

        rescuer = start_worker(worker_tmp, queues=queue, name=f"rescuer-{SESSION}", pool="prefork", concurrency=1,
                               **worker_env(studio_dirs, queue=queue))
        run = wait_run(run.pk, {"succeeded", "failed", "cancelled"}, timeout=120, worker=rescuer)
        assert run.status == "succeeded", run.error
        assert run.worker.startswith("rescuer-")
        assert "was lost" in run.log and "Resuming from checkpoint-" in run.log
        resumed_from = int(run.log.split("Resuming from checkpoint-")[1].split()[0])
        assert 40 <= resumed_from <= killed_at
        # Nothing lost: every logged step is there, up to the last; nothing duplicated: one model.
        steps = sorted(set(MetricPoint.objects.filter(run=run, name="loss").values_list("step", flat=True)))
        assert steps == list(range(5, STEPS + 1, 5))
        assert ModelVersion.objects.filter(produced_by=run).count() == 1
        assert TrainingRun.objects.count() == 1

        # Two deliveries reach the rescuer: the re-enqueue of its start-up sweep and the victim's own
        # message, restored after the visibility timeout. Whichever comes second changes nothing.
        wait_for(lambda: rescuer.output().count("succeeded in") >= 2, timeout=30, what="the second delivery",
                 interval=0.5)
        assert ModelVersion.objects.filter(produced_by=run).count() == 1
        assert TrainingRun.objects.get(pk=run.pk).status == "succeeded"
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()
