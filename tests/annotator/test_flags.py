"""Stop and cancel flags are raised when the request's transaction commits, and never by a request
that rolls back: a worker that sees a flag finds the database already saying why."""

from __future__ import annotations

import pytest
from django.db import transaction

from annotator import flags
from annotator.models import RunStatus, TraceStatus, TrainingRun
from annotator.services.generation import trace_stop
from annotator.services.training.runs import run_cancel
from tests.factories import make_trace


def running_trace(project, prompt):
    trace = make_trace(project, prompt, steps=["1. 12 + 30 = 42"], status=TraceStatus.RUNNING)
    flags.clear_stop(trace.pk)  # ids repeat across test databases; Redis outlives them
    return trace


def test_trace_stop_raises_the_stop_flag_on_commit(project, prompt, users, django_capture_on_commit_callbacks):
    trace = running_trace(project, prompt)
    with django_capture_on_commit_callbacks(execute=True):
        trace_stop(trace=trace, actor=users["supervisor"])
        assert not flags.stop_requested(trace.pk)  # the generate worker must not see it before the commit
    assert flags.stop_requested(trace.pk)


def test_a_rolled_back_stop_leaves_no_flag(project, prompt, users):
    trace = running_trace(project, prompt)
    with pytest.raises(RuntimeError), transaction.atomic():
        trace_stop(trace=trace, actor=users["supervisor"])
        raise RuntimeError("the request failed after the stop")
    assert not flags.stop_requested(trace.pk)
    trace.refresh_from_db()
    assert trace.status == TraceStatus.RUNNING


def test_run_cancel_raises_the_cancel_flag_on_commit(project, users, django_capture_on_commit_callbacks):
    from annotator.models import ModelVersion

    base = ModelVersion.objects.create(project=project, name="base", base_model="/models/base", path="/models/base")
    run = TrainingRun.objects.create(project=project, stage="sft", base_model=base, status=RunStatus.RUNNING)
    flags.clear_cancel(run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        run_cancel(run=run, actor=users["owner"])
        assert not flags.cancel_requested(run.pk)
    assert flags.cancel_requested(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLING
