"""The sweep of waiting work sends a lost task again once among several sweepers, then backs off,
and never resends work that is not waiting (annotator/services/waiting.py). Real PostgreSQL and
Valkey (the broker): the messages are counted in the broker's queue. The live tests
(tests/annotator/live/test_waiting_work.py) run the same sweep in real workers."""

from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone

from annotator import flags
from annotator.models import Trace
from annotator.services.waiting import WaitingSweep
from tests.factories import make_trace


def _queued_since(trace: Trace, seconds: float) -> None:
    Trace.objects.filter(pk=trace.pk).update(status="queued", updated_at=timezone.now() - timedelta(seconds=seconds))


def test_several_sweepers_send_a_waiting_trace_once_per_wait_and_the_wait_doubles(db, project, prompt, settings):
    settings.CELERY_GENERATE_QUEUE = queue = f"waiting-{time.monotonic_ns()}"
    waiting = make_trace(project, prompt, steps=[], status="queued")
    fresh = make_trace(project, prompt, steps=[], status="queued")  # queued "just now" all along
    done = make_trace(project, prompt, steps=["1. x"], answer="1")
    _queued_since(waiting, 5)
    _queued_since(fresh, -60)
    flags.forget_all()
    Trace.objects.filter(pk=done.pk).update(updated_at=timezone.now() - timedelta(seconds=5))
    broker = flags.redis_client()
    try:
        first, second = WaitingSweep(resend_s=1), WaitingSweep(resend_s=1)
        assert first.run_once() == {"trace": [waiting.pk]}
        assert second.run_once() == {}  # the other sweeper's send counts for both
        time.sleep(1.1)
        assert second.run_once() == {"trace": [waiting.pk]}  # after 1 s
        time.sleep(1.1)
        assert first.run_once() == {}  # now the wait is 2 s
        time.sleep(1.0)
        assert first.run_once() == {"trace": [waiting.pk]}
        assert broker.llen(queue) == 3  # and nothing for the fresh, the finished trace
    finally:
        broker.delete(queue)
    assert Trace.objects.get(pk=fresh.pk).status == "queued"
