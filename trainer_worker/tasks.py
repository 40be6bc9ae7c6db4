"""Celery adapters of the trainer workers: ids in, the work and its idempotency in
annotator.services.training (the only module of trainer_worker that imports the web app).

Run a train worker with one task at a time and one prefetched (settings do both):
``celery -A webapp worker -Q train -c 1 --pool prefork``. Late acks plus
``reject_on_worker_lost`` put the message of a worker that dies back in the queue; the service's
claim makes that redelivery resume the run (or drop a duplicate) rather than train twice.
"""

from __future__ import annotations

import logging
import socket

from celery import shared_task
from celery.signals import worker_ready

from annotator.enqueue import AUTOTRAIN_CHECK, EVALUATE_VERSION, TRAIN

log = logging.getLogger(__name__)


@shared_task(name=TRAIN, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train(self, *, run_id: int) -> str | None:
    from annotator.services.training.notify import run_ended
    from annotator.services.training.worker import run_execute
    from annotator.services.waiting import retried_until_claimed

    worker = self.request.hostname or socket.gethostname()
    # What raises here was raised before the run's claim: retried, then the run ends failed.
    status = None
    with retried_until_claimed(self, "run", run_id):
        status = run_execute(run_id=run_id, worker=worker)
    run_ended(run_id=run_id)  # once, whichever delivery gets here first
    return status


@shared_task(name=AUTOTRAIN_CHECK, acks_late=True, ignore_result=True)
def autotrain_check(*, project_id: int) -> int | None:
    from annotator.services.training.autotrain import autotrain_check as check

    run = check(project_id=project_id)
    return None if run is None else run.pk


@shared_task(name=EVALUATE_VERSION, acks_late=True, ignore_result=True)
def evaluate_version(*, version_id: int, options: dict | None = None) -> int:
    """Evaluate a model version no run produced (the demo's base model) on the held-out prompts;
    ``options`` as a run's ``config.eval`` (with ``guide``: guided and unguided, side by side)."""
    from annotator.services.training.worker import version_evaluate

    return len(version_evaluate(version_id=version_id, options=options))


@worker_ready.connect
def _recover_runs(sender=None, **kwargs) -> None:
    """A train worker that starts re-enqueues runs whose worker is gone (see runs_recover)."""
    from django.conf import settings

    app = getattr(sender, "app", None)
    queues = set(app.amqp.queues.consume_from) if app is not None else set()
    if settings.CELERY_TRAIN_QUEUE not in queues:
        return  # only the workers that train do this
    from annotator.services.training.worker import runs_recover

    try:
        ids = runs_recover()
    except Exception:  # a worker must start even when the database is briefly away
        log.exception("could not look for runs to recover")
        return
    if ids:
        log.info("re-enqueued runs whose worker was lost: %s", ids)
