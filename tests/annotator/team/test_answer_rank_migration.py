"""Migration 0013 backfills the confident_wrong keys of the traces that exist when it runs, with the
Python answer check, in batches (real migrations, back to 0012 and forward again)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from annotator import answers, selectors
from annotator.models import StepScore, Trace, TraceStatus
from tests.factories import make_prompt, make_trace

BEFORE, AFTER = ("annotator", "0012_trace_in_flight"), ("annotator", "0013_answer_rank")


def _migrate(target) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


def _migrate_latest() -> None:
    """Back to the newest migrations (the later tests of the session need them)."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("annotator"))


@pytest.mark.django_db(transaction=True)  # the migration is not atomic: CREATE INDEX CONCURRENTLY
def test_the_migration_checks_every_existing_trace_in_batches(project, users, monkeypatch):
    owner = users["owner"]
    sums = [make_prompt(project, actor=owner, text=f"Compute {n} + {n}.", reference=str(2 * n)) for n in range(4)]
    haiku = make_prompt(project, actor=owner, text="Write a haiku.", category="general", reference="")
    traces = []
    for n in range(23):  # more than two batches of 7
        p = sums[n % 4]
        traces.append(make_trace(project, p, steps=["a"], answer=str(2 * (n % 4)) if n % 3 else "wrong",
                                 status=TraceStatus.FINISHED if n % 5 else TraceStatus.STOPPED))
    traces.append(make_trace(project, haiku, steps=["a"], answer="Leaves."))
    for n, trace in enumerate(traces):
        StepScore.objects.create(trace=trace, step_index=0, scorer="prm:1", score=(n % 4) / 4)
    expected = [i for i, _ in selectors.queue_list(project, users["supervisor"], order="confident_wrong",
                                                   from_scores=True).values_list("id", "triage_score")]
    monkeypatch.setattr(answers, "BATCH", 7)
    try:
        _migrate(BEFORE)
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.columns "
                        "WHERE table_name = 'annotator_trace' AND column_name = 'answer_rank'")
            assert cur.fetchone()[0] == 0  # really before
        _migrate(AFTER)
    finally:
        _migrate_latest()
    stored = dict(Trace.objects.filter(project=project).values_list("id", "answer_verdict"))
    assert None not in stored.values()  # every trace checked, the unfinished ones too
    unchecked = Trace.objects.filter(project=project, answer_rank=None)
    assert not unchecked.exists()
    for trace in traces:
        text = trace.prompt.messages[0]["content"]
        assert stored[trace.pk] == answers.verdict(text, trace.final_answer, trace.prompt.reference_answer)
    # The order straight from the columns (nothing left for the queue to check), as before.
    assert answers.verdicts_fill(project_id=project.pk, unranked=True) == 0
    after = selectors.queue_list(project, users["supervisor"], order="confident_wrong")
    assert list(after.values_list("id", flat=True)) == expected
    with connection.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'annotator_trace'")
        assert {"trace_project_answer_rank", "trace_project_unranked"} <= {r[0] for r in cur.fetchall()}
