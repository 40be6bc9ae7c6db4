"""Celery tasks of the annotator app: thin adapters that call services (ids in, nothing out)."""

from celery import shared_task


@shared_task(name="annotator.generate_trace", acks_late=True, ignore_result=True)
def generate_trace(*, trace_id: int) -> None:
    from annotator.services.generation import trace_generate

    trace_generate(trace_id=trace_id)


from annotator.datasets.tasks import *  # noqa: E402, F403 - dataset snapshot builds
