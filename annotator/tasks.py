"""Celery tasks of the annotator app: thin adapters that call services (ids in, nothing out).

Services enqueue these by name through ``annotator.enqueue``; nothing imports this module but the
Celery worker, so the services never depend on it.
"""

from __future__ import annotations

from celery import shared_task

from annotator.enqueue import BUILD_SNAPSHOT, GENERATE_TRACE


@shared_task(name=GENERATE_TRACE, acks_late=True, ignore_result=True)
def generate_trace(*, trace_id: int) -> None:
    from annotator.services.generation import trace_generate

    trace_generate(trace_id=trace_id)


@shared_task(name=BUILD_SNAPSHOT, acks_late=True)
def build_snapshot(*, snapshot_id: int) -> str | None:
    """Build a snapshot's files; the work and its idempotency live in the service."""
    from annotator.services.snapshots import snapshot_build

    snapshot = snapshot_build(snapshot_id=snapshot_id)
    return None if snapshot is None else snapshot.status
