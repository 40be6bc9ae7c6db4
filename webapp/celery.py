"""The Celery app. Queues: `default` (datasets, snapshots, policies), `generate` (model backends),
`train` (TRL runs: one at a time, one prefetched, late acks, rejected back to the queue if the
worker is lost)."""

from __future__ import annotations

import os

from celery import Celery
from celery.worker.consumer import Consumer
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


class BrokerLossConsumer(Consumer):
    """Celery's consumer, surviving the loss of its Redis broker (a Valkey restart).

    On a lost connection Celery 5.7 first `collect()`s it, which detaches the kombu transport from
    the connection's details (`transport.client = None`), and then closes it. Everything that still
    goes through the old channel afterwards (that close, restoring unacked messages, the late ack of
    a task that ran through the loss) builds a Redis pool from those details and raises
    AttributeError. Celery lets only connection errors through there, so the AttributeError ended the
    whole worker ("Unrecoverable error"), and with it every generation it was running
    (tests/annotator/live/test_fault_valkey_restart.py). Here the old transport keeps its details:
    those calls get connection errors (the broker is away) or succeed (it is back), both of which
    Celery handles; the consumer reconnects, and running tasks go on. A late ack that is lost this
    way means a redelivery, which the tasks are idempotent against."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        transport = getattr(connection, "_transport", None)
        if transport is not None:
            collect = connection.collect

            def collect_keeping_details(*args, **kwargs):
                try:
                    return collect(*args, **kwargs)
                finally:
                    transport.client = connection

            connection.collect = collect_keeping_details
        super().on_connection_error_after_connected(exc)
        if transport is not None:
            transport.client = connection


app = Celery("safeladder")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("generate"), Queue("train"))
app.conf.worker_consumer = f"{__name__}:BrokerLossConsumer"
app.autodiscover_tasks(["annotator", "trainer_worker"])
