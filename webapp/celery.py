"""The Celery app. Queues: `default` (datasets, snapshots, policies), `generate` (model backends),
`train` (TRL runs: one at a time, one prefetched, late acks, rejected back to the queue if the
worker is lost)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("safeladder")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("generate"), Queue("train"))
app.autodiscover_tasks(["annotator", "trainer_worker"])
