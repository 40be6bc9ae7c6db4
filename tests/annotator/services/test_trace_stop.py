"""Stop answers the state it leaves the trace in (real PostgreSQL and Valkey)."""

from __future__ import annotations

import pytest

from annotator import flags
from annotator.errors import Conflict
from annotator.models import AuditEvent, TraceStatus
from annotator.services.generation import trace_stop
from tests.factories import make_trace


def test_a_running_trace_is_stopping_and_a_second_stop_changes_nothing(project, prompt, users):
    trace = make_trace(project, prompt, steps=["1. 12 + 30 = 42"], status=TraceStatus.RUNNING)
    flags.clear_stop(trace.pk)
    assert trace_stop(trace=trace, actor=users["supervisor"]).status == TraceStatus.STOPPING
    assert trace_stop(trace=trace, actor=users["owner"]).status == TraceStatus.STOPPING
    assert AuditEvent.objects.filter(action="trace.stopped").count() == 1
    trace.refresh_from_db()
    assert trace.status == TraceStatus.STOPPING


def test_a_queued_trace_is_stopped_at_once(project, prompt, users):
    trace = make_trace(project, prompt, steps=[], status=TraceStatus.QUEUED)
    assert trace_stop(trace=trace, actor=users["supervisor"]).status == TraceStatus.STOPPED


def test_a_stop_after_the_end_answers_already_finished(project, prompt, users, trace):
    # Before: a generic bad_state, and the UI said nothing (issue 12).
    with pytest.raises(Conflict) as refused:
        trace_stop(trace=trace, actor=users["supervisor"])
    assert refused.value.code == "already_finished"
    assert refused.value.details["status"] == trace.status
