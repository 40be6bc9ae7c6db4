"""Work that waits for a worker is never left waiting for ever (annotator/services/waiting.py).

Before: a trace whose task message was lost (a broker restart, a publish that failed after the
commit), or whose task raised before it claimed the trace (PostgreSQL's "too many clients"), stayed
`queued` for good, and so did a pending snapshot. Now the sweep sends the task again, and a task
that fails before its claim is retried, then ends the work `failed` with the error.

Real Celery workers, real PostgreSQL (a login role of its own per test, to make the worker's
database refuse it), real Valkey; the generation runs the small scripted model.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotator.models import DatasetSnapshot, Trace
from annotator.services.generation import trace_create
from tests.support.live import start_worker

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, what: str, worker=None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout} s" + (f":\n{worker.output()[-3000:]}" if worker else ""))


def _status(model, pk: int) -> str:
    return model.objects.filter(pk=pk).values_list("status", flat=True).get()


def _own_worker(worker_tmp, settings, name: str, **env: str):
    queue = f"generate-{name}-{time.monotonic_ns()}"
    settings.CELERY_GENERATE_QUEUE = queue  # what this test sends goes to this worker alone
    return start_worker(worker_tmp, queues=queue, name=name, pool="threads", concurrency=2,
                        CELERY_GENERATE_QUEUE=queue, GENERATE_SWEEP_S="0.5", **env)


def test_a_generation_and_a_snapshot_whose_messages_were_lost_are_sent_again_and_end(
        live, worker_tmp, settings, default_worker):
    worker = _own_worker(worker_tmp, settings, "lost-message", WAITING_RESEND_S="1")
    try:
        # Rows as trace_create and snapshot_create leave them, but no message was ever sent (as when
        # the broker lost it, or the publish after the commit failed).
        trace = Trace.objects.create(project=live.project, prompt=live.prompt, model_version=live.model,
                                     sampling_params={"temperature": 0, "max_new_tokens": 120})
        snapshot = DatasetSnapshot.objects.create(project=live.project, kind="sft")
        _wait_for(lambda: _status(Trace, trace.pk) == "finished", 60, "the trace finishing", worker)
        _wait_for(lambda: _status(DatasetSnapshot, snapshot.pk) == "ready", 60, "the snapshot ready", worker)
    finally:
        worker.stop()
    trace.refresh_from_db()
    assert trace.final_answer and trace.error == ""
    assert trace.steps.count() >= 1
    assert "sent the task again" in worker.output()


def test_a_generation_whose_worker_the_database_refuses_starts_once_it_lets_it_in(live, worker_tmp, settings,
                                                                                  db_role):
    name, url = db_role
    with connection.cursor() as cursor:  # "too many connections for role": what a full server answers too
        cursor.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT 0')
    worker = _own_worker(worker_tmp, settings, "refused", DATABASE_URL=url)
    try:
        trace = trace_create(project=live.project, prompt=live.prompt, actor=live.users["supervisor"])
        worker.wait_for("attempt 1 to start failed", timeout=30)
        assert _status(Trace, trace.pk) == "queued"
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT -1')
        _wait_for(lambda: _status(Trace, trace.pk) == "finished", 60, "the trace finishing", worker)
    finally:
        worker.stop()
    assert "too many connections" in worker.output()
    trace.refresh_from_db()
    assert trace.error == "" and trace.final_answer


def test_a_generation_that_can_never_start_ends_failed_with_the_reason(live, worker_tmp, settings, db_role):
    name, url = db_role
    with connection.cursor() as cursor:  # the worker reads the trace's model before its claim: it cannot
        cursor.execute(f'REVOKE SELECT ON annotator_modelversion FROM "{name}"')
    worker = _own_worker(worker_tmp, settings, "never", DATABASE_URL=url, WORKER_START_ATTEMPTS="3")
    try:
        trace = trace_create(project=live.project, prompt=live.prompt, actor=live.users["supervisor"])
        took = _wait_for(lambda: _status(Trace, trace.pk) == "failed", 60, "the trace failing", worker)
    finally:
        worker.stop()
    assert took < 30  # 2 s + 4 s of back-off, not the sweep's resends
    viewer = APIClient()
    viewer.force_authenticate(live.users["viewer"])
    detail = viewer.get(f"/api/projects/{live.project.pk}/traces/{trace.pk}/").json()
    assert detail["status"] == "failed"
    assert detail["error"].startswith("No worker could start this generation: 3 attempts failed; the last with ")
    assert "permission denied for table annotator_modelversion" in detail["error"]

