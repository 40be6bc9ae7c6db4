"""Celery adapter for dataset snapshots: thin; the work and its idempotency live in the service."""

from __future__ import annotations

from celery import shared_task

__all__ = ["build_snapshot"]


@shared_task(name="annotator.build_snapshot", acks_late=True)
def build_snapshot(*, snapshot_id: int) -> str | None:
    from annotator.services.snapshots import snapshot_build

    snapshot = snapshot_build(snapshot_id=snapshot_id)
    return None if snapshot is None else snapshot.status
