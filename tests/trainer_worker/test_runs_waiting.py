"""A training run whose task fails before it claims the run ends `failed` with the reason.

Before: the train task's exception escaped to Celery, which acknowledged the message; the run stayed
`queued`, and the waiting-work sweep sent its task again every 1, 2, 4 … 64 minutes for good, each
delivery failing the same way (the sweep never fails a run for waiting: it may wait hours behind
other runs). Now the task is retried with back-off, then the run ends failed (as a trace, a set of
alternatives or a snapshot does; annotator/services/waiting.py).

A real train worker connecting as a PostgreSQL role of its own that may not claim runs (it may
update a run's status, error and end, not its worker), real Valkey.
"""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotator.models import AuditEvent, TrainingRun
from tests.trainer_worker.conftest import SESSION, TINY_CONFIG, build_corpus, ready_snapshot, wait_run, worker_env

pytestmark = pytest.mark.slow


def test_a_run_that_no_worker_can_start_ends_failed_with_the_reason(transactional_db, studio, studio_dirs,
                                                                      worker_tmp, project, users, base_version,
                                                                      db_role):
    from annotator.services.training.runs import run_create
    from tests.support.live import start_worker

    name, url = db_role
    with connection.cursor() as cursor:
        cursor.execute(f'REVOKE UPDATE ON annotator_trainingrun FROM "{name}"')
        cursor.execute(f'GRANT UPDATE (status, error, finished_at, progress) ON annotator_trainingrun TO "{name}"')
    queue = f"train-never-{SESSION}"
    studio.CELERY_TRAIN_QUEUE = queue
    worker = start_worker(worker_tmp, queues=queue, name=f"never-{SESSION}", pool="prefork", concurrency=1,
                          **worker_env(studio_dirs, queue=queue, DATABASE_URL=url, WORKER_START_ATTEMPTS="3"))
    try:
        build_corpus(project, users["owner"])
        run = run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                         snapshots=[ready_snapshot(project, users["owner"], "sft")], config=TINY_CONFIG)
        run = wait_run(run.pk, {"succeeded", "failed", "cancelled"}, timeout=60, worker=worker)
    finally:
        worker.stop()
    assert run.status == "failed"
    owner_api = APIClient()
    owner_api.force_authenticate(users["owner"])
    detail = owner_api.get(f"/api/projects/{project.pk}/runs/{run.pk}/").json()
    assert detail["status"] == "failed"
    assert detail["error"].startswith("No worker could start this training run: 3 attempts failed; the last with ")
    assert "permission denied for table annotator_trainingrun" in detail["error"]
    assert detail["finished_at"] is not None
    assert AuditEvent.objects.filter(action="training_run.failed", target_id=str(run.pk)).count() == 1
    assert TrainingRun.objects.get(pk=run.pk).worker == ""  # never claimed
