"""The one way the web side hands work to a worker: by task name, with ids, once the transaction commits.

Services never import task modules (those import the services they call), so the code reads
downwards only: view or consumer -> service -> ``enqueue_on_commit("annotator.generate_trace",
trace_id=...)`` -> the broker -> ``annotator.tasks.generate_trace`` -> the service again on the
worker. A task's arguments are ids (ints or strings), never model instances: a worker reads the row
itself, under a lock, and finds what happened to it in the meantime.

The queue of each task is read from settings when the message is sent, so a test session (or a
second studio on one Redis) can point a queue at its own name.
"""

from __future__ import annotations

from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction

GENERATE_TRACE = "annotator.generate_trace"
BUILD_SNAPSHOT = "annotator.build_snapshot"
TRAIN = "trainer_worker.train"
AUTOTRAIN_CHECK = "trainer_worker.autotrain_check"
EVALUATE_VERSION = "trainer_worker.evaluate_version"
DELIVER_WEBHOOK = "annotator.deliver_webhook"
GENERATE_ALTERNATIVES = "annotator.generate_alternatives"

# task name -> the setting that names its queue
QUEUE_SETTINGS: dict[str, str] = {
    GENERATE_TRACE: "CELERY_GENERATE_QUEUE",
    BUILD_SNAPSHOT: "CELERY_TASK_DEFAULT_QUEUE",
    TRAIN: "CELERY_TRAIN_QUEUE",
    AUTOTRAIN_CHECK: "CELERY_TASK_DEFAULT_QUEUE",  # a policy check is quick; it must not wait for a run
    EVALUATE_VERSION: "CELERY_TRAIN_QUEUE",  # loads a model and generates: the train worker's work
    DELIVER_WEBHOOK: "CELERY_TASK_DEFAULT_QUEUE",
    GENERATE_ALTERNATIVES: "CELERY_GENERATE_QUEUE",  # needs the model: the generate worker's work
}


def enqueue(task_name: str, *, countdown: float | None = None, **ids: int | str) -> None:
    """Send ``task_name`` now (to run ``countdown`` seconds from now, when given). Outside a
    transaction only (worker start-up, on-commit callbacks); inside one, use ``enqueue_on_commit``."""
    if task_name not in QUEUE_SETTINGS:
        raise ValueError(f"unknown task {task_name!r}; known: {', '.join(QUEUE_SETTINGS)}")
    bad = sorted(k for k, v in ids.items() if isinstance(v, bool) or not isinstance(v, int | str))
    if bad:
        raise TypeError(f"task arguments are ids (int or str); not: {', '.join(bad)}")
    queue = getattr(settings, QUEUE_SETTINGS[task_name])
    current_app.send_task(task_name, kwargs=ids, queue=queue, countdown=countdown)


def enqueue_on_commit(task_name: str, *, countdown: float | None = None, **ids: int | str) -> None:
    """Send ``task_name`` with ``ids`` once the current transaction commits (at once without one).

    A rolled-back request sends nothing, and the worker never gets an id whose row it cannot see yet.
    """
    if task_name not in QUEUE_SETTINGS:  # fail in the request, not silently in an on-commit callback
        raise ValueError(f"unknown task {task_name!r}; known: {', '.join(QUEUE_SETTINGS)}")
    transaction.on_commit(partial(enqueue, task_name, countdown=countdown, **ids))
