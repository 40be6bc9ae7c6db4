"""The sweep of lost generations (real PostgreSQL and Valkey): a trace whose heartbeat has been
missing for the grace period ends; one whose heartbeat comes back (Redis restarted and the owner
set its key again) is left alone; a stopping trace ends stopped."""

from __future__ import annotations

from annotator import flags
from annotator.models import TraceStatus
from annotator.services.generation import TraceSweep
from tests.factories import make_trace


def _generating(project, prompt, status=TraceStatus.RUNNING):
    trace = make_trace(project, prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37"], status=status)
    flags.redis_client().delete(flags.trace_owner_key(trace.pk))  # ids repeat across test databases
    return trace


def test_a_trace_without_heartbeat_ends_failed_after_the_grace_period(project, prompt):
    trace = _generating(project, prompt)
    sweep = TraceSweep(grace_s=6)
    assert sweep.run_once(now=100.0) == []  # first seen missing: not yet
    assert sweep.run_once(now=105.9) == []
    trace.refresh_from_db()
    assert trace.status == TraceStatus.RUNNING
    assert sweep.run_once(now=106.0) == [trace.pk]
    trace.refresh_from_db()
    assert (trace.status, trace.finish_reason) == (TraceStatus.FAILED, "worker_lost")
    assert trace.error == (
        "The generate worker of this trace was lost (its heartbeat stopped); its 2 closed step(s) are kept."
    )
    assert sweep.run_once(now=200.0) == []  # ended once


def test_a_heartbeat_that_comes_back_keeps_the_trace(project, prompt):
    trace = _generating(project, prompt)
    beat = flags.TraceHeartbeat(trace.pk, "worker:1", ttl_s=9)
    sweep = TraceSweep(grace_s=6)
    assert sweep.run_once(now=100.0) == []  # missing (as after a Redis restart)...
    beat.claim()  # ...and its owner sets it again within a third of its lifetime
    assert sweep.run_once(now=103.0) == []
    flags.redis_client().delete(beat.key)
    assert sweep.run_once(now=107.0) == []  # missing again: the grace period starts over
    beat.claim()
    assert sweep.run_once(now=120.0) == []
    trace.refresh_from_db()
    assert trace.status == TraceStatus.RUNNING
    beat.release()


def test_a_stopping_trace_whose_worker_died_ends_stopped(project, prompt):
    trace = _generating(project, prompt, status=TraceStatus.STOPPING)
    sweep = TraceSweep(grace_s=1)
    sweep.run_once(now=0.0)
    assert sweep.run_once(now=1.0) == [trace.pk]
    trace.refresh_from_db()
    assert (trace.status, trace.finish_reason) == (TraceStatus.STOPPED, "cancelled")


def test_finished_traces_are_never_touched(project, prompt, trace):
    sweep = TraceSweep(grace_s=0)
    assert sweep.run_once(now=0.0) == [] and sweep.run_once(now=10.0) == []
    trace.refresh_from_db()
    assert trace.status == TraceStatus.FINISHED


def test_alternatives_whose_worker_died_end_failed_with_the_reason(project, prompt):
    from annotator.models import AlternativeSet, AlternativesStatus
    from annotator.services.alternatives import AlternativesSweep

    trace = make_trace(project, prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37"])
    lost = AlternativeSet.objects.create(trace=trace, step_index=1, k=4, seed=1, status=AlternativesStatus.RUNNING)
    held = AlternativeSet.objects.create(trace=trace, step_index=0, k=4, seed=2, status=AlternativesStatus.RUNNING)
    for alt in (lost, held):
        flags.redis_client().delete(flags.alternatives_owner_key(alt.pk))  # ids repeat across test databases
    beat = flags.AlternativesHeartbeat(held.pk, "worker:1", ttl_s=9)
    beat.claim()
    sweep = AlternativesSweep(grace_s=6)
    assert sweep.run_once(now=100.0) == []
    assert sweep.run_once(now=106.0) == [lost.pk]
    lost.refresh_from_db()
    held.refresh_from_db()
    assert lost.status == AlternativesStatus.FAILED and "was lost" in lost.error and "ask again" in lost.error
    assert held.status == AlternativesStatus.RUNNING  # its worker is alive
    beat.release()
