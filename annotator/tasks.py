"""Celery tasks of the annotator app: thin adapters that call services (ids in, nothing out).

Services enqueue these by name through ``annotator.enqueue``; nothing imports this module but the
Celery worker, so the services never depend on it.
"""

from __future__ import annotations

import logging
import socket
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from annotator.enqueue import BUILD_SNAPSHOT, DELIVER_WEBHOOK, GENERATE_ALTERNATIVES, GENERATE_TRACE

log = logging.getLogger(__name__)


@shared_task(name=GENERATE_TRACE, bind=True, acks_late=True, ignore_result=True)
def generate_trace(self, *, trace_id: int) -> None:
    from annotator.services.relay import trace_relay
    from annotator.services.waiting import retried_until_claimed

    # A vLLM stream is handed to this process's relay hub (one event loop for all of them) and the
    # task returns; a local model generates here, in this thread (annotator/services/relay.py).
    with retried_until_claimed(self, "trace", trace_id):
        trace_relay(trace_id=trace_id, owner=self.request.hostname or socket.gethostname())


@shared_task(name=GENERATE_ALTERNATIVES, bind=True, acks_late=True, ignore_result=True)
def generate_alternatives(self, *, set_id: int) -> None:
    from annotator.services.alternatives import alternatives_generate
    from annotator.services.waiting import retried_until_claimed

    with retried_until_claimed(self, "alternatives", set_id):
        alternatives_generate(set_id=set_id, owner=self.request.hostname or socket.gethostname())


@shared_task(name=BUILD_SNAPSHOT, bind=True, acks_late=True)
def build_snapshot(self, *, snapshot_id: int) -> str | None:
    """Build a snapshot's files; the work, its heartbeat and its idempotency live in the service."""
    from annotator.services.snapshots import snapshot_build
    from annotator.services.waiting import retried_until_claimed

    snapshot = None  # stays None when the last attempt to start ended the snapshot failed
    with retried_until_claimed(self, "snapshot", snapshot_id):
        snapshot = snapshot_build(snapshot_id=snapshot_id, owner=self.request.hostname or socket.gethostname())
    return None if snapshot is None else snapshot.status


@shared_task(name=DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
def deliver_webhook(*, delivery_id: int) -> str | None:
    """One attempt of a webhook delivery; retries are scheduled by the service."""
    from annotator.services.webhooks import webhook_deliver

    return webhook_deliver(delivery_id=delivery_id)


@worker_ready.connect
def _recover_webhooks(sender=None, **kwargs) -> None:
    """A worker of the default queue re-enqueues webhook deliveries whose retry message was lost."""
    from django.conf import settings

    app = getattr(sender, "app", None)
    queues = set(app.amqp.queues.consume_from) if app is not None else set()
    if settings.CELERY_TASK_DEFAULT_QUEUE not in queues:
        return
    from annotator.services.webhooks import webhooks_recover

    try:
        ids = webhooks_recover()
    except Exception:  # a worker must start even when the database is briefly away
        log.exception("could not look for webhook deliveries to recover")
        return
    if ids:
        log.info("re-enqueued webhook deliveries: %s", ids)


@worker_ready.connect
def _sweep_lost_generations(sender=None, **kwargs) -> None:
    """Generate and default workers sweep for traces whose generate worker died, and for snapshots
    whose building worker died (one daemon thread; see ``annotator.services.generation.TraceSweep``
    and ``annotator.services.snapshots.SnapshotSweep``). Several sweepers are fine: each trace or
    snapshot is ended once, under its row lock. The default worker's sweep covers a studio whose
    only generate worker is gone; a generate worker's covers one whose default worker is gone."""
    from django.conf import settings

    app = getattr(sender, "app", None)
    queues = set(app.amqp.queues.consume_from) if app is not None else set()
    if not queues & {settings.CELERY_GENERATE_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE}:
        return
    from annotator.services.sweeps import sweep_forever

    threading.Thread(
        target=sweep_forever,
        kwargs={"interval_s": settings.GENERATE_SWEEP_S, "grace_s": settings.GENERATE_SWEEP_GRACE_S},
        name="sweep-lost-generations",
        daemon=True,
    ).start()
    log.info("sweeping for lost generations and snapshot builds every %.0f s", settings.GENERATE_SWEEP_S)


@worker_shutdown.connect
def _drain_relay_hub(sender=None, **kwargs) -> None:
    """A warm shutdown waits for the traces this process's relay hub streams (as Celery waits for
    running tasks), up to GENERATE_RELAY_DRAIN_S, then ends the rest with a reason."""
    from annotator.services.relay import relay_drain

    relay_drain()
