"""The queue's counters (QueueCounter, migration 0014; TraceTotals, 0015) against the counts computed directly,
after every kind of write a deployment sees: the services, REST, bulk INSERTs, ORM bulk updates, raw
SQL, cascades, a trace moving in and out of ``failed``, reviews on failed traces, deleted people
and prompts; and the migration's backfill; and two writers of one prompt at once."""

from __future__ import annotations

import importlib
import threading
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from annotator import selectors
from annotator.models import (
    Assignment,
    Membership,
    Prompt,
    QueueCounter,
    QueueItem,
    Role,
    Trace,
    TraceReview,
    TraceStatus,
)
from annotator.services.assignments import assignment_remove, assignments_distribute
from annotator.services.labels import trace_review_clear, trace_review_set
from tests.annotator.team.conftest import api
from tests.factories import make_prompt, make_trace

FIELDS = ("assigned", "done", "failed", "failed_done", "untraced")


def _truth(project, user) -> dict[str, int]:
    """What the counters mean, counted from the tables (the selectors' definitions before 0014)."""
    assigned = Trace.objects.filter(project=project).filter(selectors._assigned_to(user))
    failed = assigned.filter(status=TraceStatus.FAILED)
    mine = selectors._mine(project, user)
    return {
        "assigned": mine.count(),
        "done": mine.filter(selectors._reviewed_by(user)).count(),
        "failed": failed.count(),
        "failed_done": failed.filter(selectors._reviewed_by(user)).count(),
        "untraced": selectors._untraced_assigned(project, user).count(),
    }


def assert_exact(project) -> dict[str, dict[str, int]]:
    """Every person's counter in ``project`` equals the direct counts, every assignment's counts
    equal its prompt's, and no counter is left for anyone without assignments."""
    seen = {}
    people = get_user_model().objects.filter(memberships__project=project)
    for user in people:
        want = _truth(project, user)
        got = selectors.queue_counter(project, user)
        assert {k: got[k] for k in FIELDS} == want, user.username
        seen[user.username] = want
    for a in Assignment.objects.filter(project=project):
        traces = Trace.objects.filter(prompt_id=a.prompt_id)
        ok = traces.exclude(status=TraceStatus.FAILED)
        bad = traces.filter(status=TraceStatus.FAILED)
        reviewed = {"reviews__annotator_id": a.annotator_id}
        assert (a.trace_count, a.done_count, a.failed_count, a.failed_done_count, a.prompt_traced) == (
            ok.count(),
            ok.filter(**reviewed).count(),
            bad.count(),
            bad.filter(**reviewed).count(),
            traces.exists(),
        )
    items = set(QueueItem.objects.filter(project=project).values_list("annotator_id", "trace_id", "reviewed"))
    assert items == {
        (a.annotator_id, t.pk, TraceReview.objects.filter(trace=t, annotator_id=a.annotator_id).exists())
        for a in Assignment.objects.filter(project=project)
        for t in Trace.objects.filter(prompt_id=a.prompt_id)
    }
    traces = Trace.objects.filter(project=project)
    assert selectors.project_totals(project) == {
        "traces": traces.count(),
        "unreviewed": traces.filter(review_count=0).count(),
        "reviewed": traces.filter(review_count__gt=0).count(),
        "disputed": traces.filter(disputed=True).count(),
    }
    stray = QueueCounter.objects.filter(project=project).exclude(
        annotator_id__in=Assignment.objects.filter(project=project).values("annotator_id")
    )
    assert not stray.exists()
    return seen


def test_counters_equal_the_direct_counts_after_every_kind_of_write(project, users, team, prompts, traces):
    ann, bob, sup = team["ann"], team["bob"], team["supervisor"]
    # Assignments by the service (a bulk_create): overlap 2 over three people.
    assignments_distribute(project=project, actor=users["owner"], annotators=["supervisor", "ann", "bob"], overlap=2)
    counts = assert_exact(project)
    assert counts["ann"]["assigned"] == 4 and counts["ann"]["done"] == 0
    mine = list(Trace.objects.filter(project=project).filter(selectors._assigned_to(ann)).order_by("id"))

    # Reviews through REST (insert, then an update of the same review, then a clear).
    client = api(ann)
    url = f"/api/projects/{project.pk}/traces/{{}}/reviews/"
    for t in mine[:3]:
        assert client.put(url.format(t.pk), {"verdict": "accept"}, format="json").status_code == 200
    client.put(url.format(mine[0].pk), {"verdict": "reject"}, format="json")
    assert assert_exact(project)["ann"]["done"] == 3
    assert client.delete(url.format(mine[2].pk)).status_code == 204
    assert assert_exact(project)["ann"]["done"] == 2
    # A review by someone the trace is not assigned to counts for nobody's queue.
    unassigned = Trace.objects.filter(project=project).exclude(selectors._assigned_to(bob)).first()
    trace_review_set(trace=unassigned, annotator=bob, verdict="accept")
    assert_exact(project)
    # Two verdicts that disagree: the trace is disputed (the project's totals).
    trace_review_set(trace=mine[0], annotator=bob, verdict="accept")
    assert assert_exact(project) and selectors.project_totals(project)["disputed"] == 1

    # New traces: one by the factory (an ORM insert), three in one raw INSERT over two prompts.
    make_trace(project, mine[0].prompt, steps=["a"], answer="1")
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status, finish_reason,
                   prompt_tokens, completion_tokens, version, error, mode, pause_reason, review_count, verdict,
                   disputed, created_at, updated_at)
               SELECT %s, p, '{}', s, '', 0, 0, 1, '', 'live', '', 0, '', false, now(), now()
               FROM unnest(%s::bigint[], %s::text[]) AS x(p, s)""",
            [project.pk, [mine[0].prompt_id, mine[1].prompt_id, mine[1].prompt_id], ["finished", "failed", "queued"]],
        )
    counts = assert_exact(project)
    assert counts["ann"]["failed"] >= 1

    # A trace moving between states: a bulk ORM update to failed and back, one row at a time too.
    reviewed = TraceReview.objects.filter(annotator=ann).values_list("trace_id", flat=True)
    moved = Trace.objects.filter(pk__in=list(reviewed)[:1]) | Trace.objects.filter(pk=mine[1].pk)
    Trace.objects.filter(pk__in=[t.pk for t in moved]).update(status=TraceStatus.FAILED)
    counts = assert_exact(project)
    assert counts["ann"]["failed_done"] >= 1
    # A review of a failed trace: in failed_done, not done.
    trace_review_set(trace=Trace.objects.get(pk=mine[1].pk), annotator=ann, verdict="reject")
    assert_exact(project)
    Trace.objects.filter(pk=mine[1].pk).update(status=TraceStatus.FINISHED)
    t = Trace.objects.get(pk=mine[0].pk)
    t.status = TraceStatus.FAILED
    t.save()  # a full-row save
    assert_exact(project)
    # Status changes that stay on one side of "failed" are not the counters' business.
    Trace.objects.filter(project=project).exclude(status=TraceStatus.FAILED).update(status=TraceStatus.STOPPED)
    assert_exact(project)

    # Bulk reviews (one INSERT), then a bulk delete of them.
    TraceReview.objects.bulk_create(
        [TraceReview(trace=t, annotator=sup, verdict="accept") for t in Trace.objects.filter(project=project)]
    )
    assert_exact(project)
    TraceReview.objects.filter(annotator=sup, trace__status=TraceStatus.STOPPED).delete()
    assert_exact(project)

    # A trace moved to another prompt (not something the services do, but a writer may).
    Trace.objects.filter(pk=mine[3].pk).update(prompt=prompts[5])
    assert_exact(project)

    # An ORM save() of a stale assignment cannot write its counts.
    stale = Assignment.objects.filter(annotator=ann).first()
    make_trace(project, stale.prompt, steps=["b"], answer="2")
    stale.due_at = None
    stale.save()
    assert_exact(project)
    Assignment.objects.filter(pk=stale.pk).update(trace_count=999)
    assert_exact(project)
    # An assignment handed to someone else.
    moved_to = (
        Assignment.objects.filter(annotator=bob)
        .exclude(prompt_id__in=Assignment.objects.filter(annotator=ann).values("prompt_id"))
        .first()
    )
    Assignment.objects.filter(pk=moved_to.pk).update(annotator=ann)
    assert_exact(project)

    # Deletes: a trace with reviews (the ORM cascade deletes the reviews first), an assignment by the
    # service, a trace before its reviews in raw SQL (the foreign keys are checked at commit).
    Trace.objects.filter(pk=mine[0].pk).delete()
    assert_exact(project)
    assignment_remove(assignment=Assignment.objects.filter(annotator=ann).first(), actor=users["owner"])
    assert_exact(project)
    victim = TraceReview.objects.filter(annotator=ann).first().trace_id
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM annotator_step WHERE trace_id = %s", [victim])
        cur.execute("DELETE FROM annotator_stepscore WHERE trace_id = %s", [victim])
        cur.execute("DELETE FROM annotator_trace WHERE id = %s", [victim])
        assert_exact(project)
        cur.execute("DELETE FROM annotator_tracereview WHERE trace_id = %s", [victim])
        assert_exact(project)

    # A prompt deleted (its assignments, traces and reviews go with it), then a person.
    Prompt.objects.filter(pk=prompts[5].pk).delete()
    assert_exact(project)
    untraced = make_prompt(project, actor=users["owner"], text="Compute 7 + 7.", reference="14")
    assignments_distribute(
        project=project, actor=users["owner"], annotators=["ann", "bob"], overlap=2, prompts=[untraced.pk]
    )
    counts = assert_exact(project)
    assert counts["ann"]["untraced"] >= 1
    # What a person sees over REST is the direct count.
    body = client.get(f"/api/projects/{project.pk}/queue/counts/").json()
    assert {k: body[k] for k in ("assigned", "done", "prompts_without_trace", "mine_exact")} == {
        "assigned": counts["ann"]["assigned"],
        "done": counts["ann"]["done"],
        "prompts_without_trace": counts["ann"]["untraced"],
        "mine_exact": True,
    }
    assert body["left"] == counts["ann"]["assigned"] - counts["ann"]["done"]
    assert client.get(f"/api/projects/{project.pk}/queue/next/").json()["left"] == body["left"]
    page = client.get(f"/api/projects/{project.pk}/queue/", {"mine": "true", "reviewed": "false"}).json()
    assert (page["count"], page["count_exact"]) == (len(page["results"]), True)
    page = client.get(f"/api/projects/{project.pk}/queue/", {"mine": "true"}).json()
    assert page["count"] == len(page["results"]) == counts["ann"]["assigned"] + counts["ann"]["failed"]
    # The mine pages list what the person's EXISTS lists, in order (from the queue items).
    theirs = Trace.objects.filter(project=project).filter(selectors._assigned_to(ann)).order_by("id")
    for reviewed, want in (
        (None, theirs),
        ("true", theirs.filter(selectors._reviewed_by(ann))),
        ("false", theirs.exclude(selectors._reviewed_by(ann))),
    ):
        query = {"mine": "true", "limit": 2} | ({"reviewed": reviewed} if reviewed else {})
        seen, url = [], f"/api/projects/{project.pk}/queue/"
        while url:
            body = client.get(url, query).json()
            seen += [(r["id"], r["mine"]) for r in body["results"]]
            url, query = body["next"], {}
        assert seen == [(t.pk, True) for t in want], reviewed

    bob.delete()
    assert_exact(project)
    assert not QueueCounter.objects.filter(annotator_id=bob.pk).exists()


def test_the_team_progress_reads_the_counters(project, users, team, prompts, traces):
    assignments_distribute(project=project, actor=users["owner"], annotators=["ann", "bob"], overlap=1)
    mine = Trace.objects.filter(project=project).filter(selectors._assigned_to(team["ann"])).first()
    trace_review_set(trace=mine, annotator=team["ann"], verdict="accept")
    rows = {r["annotator"]["username"]: r for r in selectors.assignment_progress(project)}
    assert (rows["ann"]["prompts"], rows["ann"]["traces"], rows["ann"]["done"], rows["ann"]["left"]) == (3, 3, 1, 2)
    trace_review_clear(trace=mine, annotator=team["ann"])
    assert selectors.assignment_progress(project)[0]["done"] == 0


def test_the_migration_backfill_counts_existing_rows(project, users, team, prompts, traces):
    assignments_distribute(project=project, actor=users["owner"], annotators=["supervisor", "ann", "bob"], overlap=2)
    for t in traces[:4]:
        for who in ("ann", "bob"):
            trace_review_set(trace=t, annotator=team[who], verdict="accept")
    Trace.objects.filter(pk=traces[1].pk).update(status=TraceStatus.FAILED)
    make_prompt(project, actor=users["owner"], text="Compute 9 + 9.", reference="18")
    assignments_distribute(project=project, actor=users["owner"], annotators=["supervisor", "ann", "bob"], overlap=2)
    want = assert_exact(project)
    # As before the migration: counts at their defaults, no counters (written with the triggers off).
    with connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("DELETE FROM annotator_queuecounter")
        cur.execute(
            "UPDATE annotator_assignment SET trace_count = 0, done_count = 0, failed_count = 0, "
            "failed_done_count = 0, prompt_traced = false"
        )
        cur.execute("SET LOCAL session_replication_role = origin")
        assert selectors.queue_counter(project, team["ann"])["assigned"] == 0
        cur.execute(importlib.import_module("annotator.migrations.0014_queue_counters").BACKFILL)
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("DELETE FROM annotator_tracetotals")
        cur.execute("SET LOCAL session_replication_role = origin")
        assert selectors.project_totals(project)["traces"] == 0
        cur.execute(importlib.import_module("annotator.migrations.0015_trace_totals").BACKFILL)
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("DELETE FROM annotator_queueitem")
        cur.execute("SET LOCAL session_replication_role = origin")
        cur.execute(importlib.import_module("annotator.migrations.0016_queue_items").BACKFILL)
    assert assert_exact(project) == want


@pytest.mark.django_db(transaction=True)
def test_two_writers_of_one_prompt_at_once_are_both_counted():
    """An assignment and a trace of its prompt written at the same time, each transaction blind to
    the other's row: the second to count waits for the first to commit, then sees its row."""
    from tests.factories import make_project

    User = get_user_model()
    owner = User.objects.create_user(username="owner-c")
    ann = User.objects.create_user(username="ann-c")
    project = make_project(owner=owner, name="concurrent")
    Membership.objects.create(project=project, user=ann, role=Role.SUPERVISOR)
    prompt = make_prompt(project, actor=owner)
    make_trace(project, prompt, steps=["a"], answer="1")
    dsn = connection.get_connection_params()
    conninfo = {k: v for k, v in dsn.items() if k in ("host", "port", "user", "password", "dbname")}

    def insert_trace(first: psycopg.Connection) -> None:
        with psycopg.connect(**conninfo) as second:
            second.execute(
                """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status, finish_reason,
                       prompt_tokens, completion_tokens, version, error, mode, pause_reason, review_count, verdict,
                       disputed, created_at, updated_at)
                   VALUES (%s, %s, '{}', 'finished', '', 0, 0, 1, '', 'live', '', 0, '', false, now(), now())""",
                [project.pk, prompt.pk],
            )
            second.commit()

    for order in ("assignment first", "trace first"):
        Assignment.objects.filter(annotator=ann).delete()
        with psycopg.connect(**conninfo) as first:
            if order == "trace first":
                # The trace's transaction counts first (nothing assigned yet) and holds the lock; the
                # assignment's waits, then sees the trace.
                with psycopg.connect(**conninfo) as second:
                    second.execute(
                        """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status,
                               finish_reason, prompt_tokens, completion_tokens, version, error, mode, pause_reason,
                               review_count, verdict, disputed, created_at, updated_at)
                           VALUES (%s, %s, '{}', 'finished', '', 0, 0, 1, '', 'live', '', 0, '', false, now(),
                                   now())""",
                        [project.pk, prompt.pk],
                    )
                    done = threading.Event()

                    def assign(done=done) -> None:
                        first.execute(
                            "INSERT INTO annotator_assignment (project_id, prompt_id, annotator_id, "
                            "created_at) VALUES (%s, %s, %s, now())",
                            [project.pk, prompt.pk, ann.pk],
                        )
                        first.commit()
                        done.set()

                    worker = threading.Thread(target=assign)
                    worker.start()
                    time.sleep(0.3)
                    waited = not done.is_set()  # waiting for the trace's transaction
                    second.commit()
                    worker.join(10)
                    assert done.is_set()
            else:
                first.execute(
                    "INSERT INTO annotator_assignment (project_id, prompt_id, annotator_id, created_at) "
                    "VALUES (%s, %s, %s, now())",
                    [project.pk, prompt.pk, ann.pk],
                )
                worker = threading.Thread(target=insert_trace, args=(first,))
                worker.start()
                time.sleep(0.3)
                waited = worker.is_alive()  # the trace's count waits for the assignment's transaction
                first.commit()
                worker.join(10)
                assert not worker.is_alive()
        assert selectors.queue_counter(project, ann)["assigned"] == Trace.objects.filter(prompt=prompt).count()
        assert_exact(project)
        assert waited, order
