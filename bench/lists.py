"""Benchmark: the review queue, the trace list, the prompt list and the audit log at 10k → 1M traces,
through the real REST endpoints, keyset (cursor) pages against offset pages and fast counts against
exact ones, in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch db> .venv/bin/python bench/lists.py \\
        --sizes 10000,100000,1000000 --repeats 30 --old-repeats 3

Seeding is SQL (``generate_series``) into the real tables, with valid foreign keys: one project
grows to each size in turn (only the difference is inserted). Per trace: 3 steps; a prompt per 5
traces; a quarter of the answers wrong against the prompt's reference; a third of the traces
reviewed by the benchmark user (review summary columns filled to match, 3% of them in
disagreement); every other trace scored by a machine scorer on step 0; a tenth of the prompts
assigned to the user; one audit event per trace. Then the new traces' answers are checked
(``answers.verdicts_fill``, as migration 0013's backfill; timed apart from the seeding), then
``ANALYZE``.

Each case is ``--repeats`` GETs (``--baseline-repeats`` for the offset baselines) by a logged-in
owner through Django's test client (URL routing, session auth, the permission gate, the view, the
serializer, the paginator's count), after a warm-up. Deep pages
start at a random row between 50% and 99% down the list (a new one per request): by cursor (what
the ``next`` links give) and, as the baseline, by ``offset``. Counts: the paginator's
``fast_count`` against ``COUNT(*)`` of the same queryset. The triage orders: their first pages
(and deep ``lowest_score`` and ``confident_wrong`` pages by cursor: anywhere 50-99% down, and among
the wrong answers) through REST, and the SQL of a 50-row page with the keys read from the trace's
columns against the path before migrations 0010 and 0013 (``queue_list(from_scores=True)``: the
correlated subqueries over StepScore, and for confident_wrong the answer check of every finished
trace in Python; ``--old-repeats`` of that one, 40+ s each at 1M). It prints p50 / p95 / mean ± std
per case and size, and the ratios.

The rows are left in the database (a scratch one) unless ``--cleanup``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from rest_framework import generics  # noqa: E402

from annotator import answers, selectors  # noqa: E402
from annotator.api import team  # noqa: E402
from annotator.api.pagination import Key, encode_cursor, fast_count  # noqa: E402
from annotator.models import Project, Prompt, Trace  # noqa: E402
from annotator.services.projects import project_create  # noqa: E402

TRACES_PER_PROMPT = 5

SEED_SQL = [
    # Prompts for the new traces.
    """INSERT INTO annotator_prompt (project_id, messages, category, reference_answer, metadata, created_at)
       SELECT %(p)s, jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Compute ' || g || ' + 30.')),
              (ARRAY['knowledge', 'safety', 'value', 'general'])[1 + g %% 4], (g + 30)::text, '{}', now()
       FROM generate_series(%(p0)s + 1, %(p1)s) g""",
    # Five traces per new prompt; review summary columns as the services keep them.
    """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status, finish_reason, final_answer,
              prompt_tokens, completion_tokens, version, error, mode, pause_reason, review_count, verdict,
              disputed, created_at, updated_at)
       SELECT %(p)s, p.id, '{}', CASE WHEN h < 90 THEN 'finished' WHEN h < 95 THEN 'failed' ELSE 'stopped' END,
              'stop', CASE WHEN h %% 4 = 1 THEN (p.reference_answer::int + 1)::text ELSE p.reference_answer END,
              20, 60, 1, '', 'live', '', CASE WHEN h %% 3 = 0 THEN 1 ELSE 0 END,
              CASE WHEN h %% 3 = 0 AND h %% 33 <> 0 THEN (CASE WHEN h %% 2 = 0 THEN 'accept' ELSE 'reject' END)
                   ELSE '' END,
              h %% 33 = 0, now(), now()
       FROM (SELECT p.id, p.reference_answer, k, (p.id * 5 + k) * 2654435761 %% 100 AS h
             FROM annotator_prompt p CROSS JOIN generate_series(1, 5) k
             WHERE p.project_id = %(p)s AND p.id > %(last_prompt)s) p
       ORDER BY p.id, p.k""",
    """INSERT INTO annotator_step (trace_id, index, text, origin, created_at)
       SELECT t.id, k, (k + 1) || '. step ' || (k + 1), 'model', now()
       FROM annotator_trace t CROSS JOIN generate_series(0, 2) k
       WHERE t.project_id = %(p)s AND t.id > %(last_trace)s""",
    """INSERT INTO annotator_stepscore (trace_id, step_index, scorer, score, detail, created_at)
       SELECT t.id, 0, 'rule:demo_task', ((t.id * 2654435761) %% 1000) / 1000.0, '', now()
       FROM annotator_trace t WHERE t.project_id = %(p)s AND t.id > %(last_trace)s AND t.id %% 2 = 0""",
    """INSERT INTO annotator_tracereview (trace_id, annotator_id, verdict, safety_label, value_label,
              knowledge_label, note, created_at, updated_at)
       SELECT t.id, %(u)s, CASE WHEN t.verdict = '' THEN 'accept' ELSE t.verdict END, '', '', '', '', now(), now()
       FROM annotator_trace t WHERE t.project_id = %(p)s AND t.id > %(last_trace)s AND t.review_count > 0""",
    """INSERT INTO annotator_assignment (project_id, prompt_id, annotator_id, created_at)
       SELECT %(p)s, p.id, %(u)s, now() FROM annotator_prompt p
       WHERE p.project_id = %(p)s AND p.id > %(last_prompt)s AND p.id %% 10 = 0""",
    """INSERT INTO annotator_auditevent (project_id, actor_id, action, target_type, target_id, data, created_at)
       SELECT %(p)s, %(u)s, 'trace.created', 'trace', t.id::text, '{}', now()
       FROM annotator_trace t WHERE t.project_id = %(p)s AND t.id > %(last_trace)s ORDER BY t.id""",
]


def grow(project: Project, user, target: int) -> tuple[float, float]:
    """Insert rows until the project has ``target`` traces; seconds taken by the SQL, and by the
    answer check of the new traces (``answers.verdicts_fill``, what migration 0013's backfill does)."""
    t0 = time.perf_counter()
    check_s = 0.0
    have = Trace.objects.filter(project=project).count()
    prompts_have, prompts_want = have // TRACES_PER_PROMPT, target // TRACES_PER_PROMPT
    if prompts_want > prompts_have:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM annotator_prompt WHERE project_id = %s", [project.pk])
            last_prompt = cur.fetchone()[0]
            cur.execute("SELECT coalesce(max(id), 0) FROM annotator_trace WHERE project_id = %s", [project.pk])
            last_trace = cur.fetchone()[0]
            args = {"p": project.pk, "u": user.pk, "p0": prompts_have, "p1": prompts_want,
                    "last_prompt": last_prompt, "last_trace": last_trace}
            for sql in SEED_SQL:
                cur.execute(sql, args)
        t1 = time.perf_counter()
        answers.verdicts_fill(project_id=project.pk)  # raw INSERTs: nobody checked their answers yet
        check_s = time.perf_counter() - t1
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    return time.perf_counter() - t0 - check_s, check_s


def cleanup(project: Project) -> None:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")  # the audit log refuses DELETE otherwise
        t = "SELECT id FROM annotator_trace WHERE project_id = %s"
        for table, col in (("annotator_stepscore", "trace_id"), ("annotator_step", "trace_id"),
                           ("annotator_tracereview", "trace_id")):
            cur.execute(f"DELETE FROM {table} WHERE {col} IN ({t})", [project.pk])
        # With the triggers off, the counters' tables too (migrations 0014-0016).
        for table in ("annotator_assignment", "annotator_auditevent", "annotator_trace", "annotator_prompt",
                      "annotator_membership", "annotator_queueitem", "annotator_queuecounter",
                      "annotator_tracetotals"):
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", [project.pk])
        cur.execute("DELETE FROM annotator_project WHERE id = %s", [project.pk])


def timed_get(client: Client, url: str) -> float:
    t0 = time.perf_counter()
    response = client.get(url)
    ms = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.content[:300]!r}")
    return ms


def ids_at_depth(qs, rng: random.Random, n: int) -> list[tuple[int, int]]:
    """(id, offset) of ``n`` rows picked at random between 50% and 99% down ``qs`` (ordered)."""
    total = qs.count()
    offsets = [int(total * rng.uniform(0.5, 0.99)) for _ in range(n)]
    ids = list(qs.values_list("id", flat=True))  # one pass; cheaper than n deep OFFSETs
    return [(ids[o], o) for o in offsets]


def stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "mean": statistics.fmean(ordered), "std": statistics.stdev(ordered) if len(ordered) > 1 else 0.0}


@contextlib.contextmanager
def _old_path(on: bool):
    """The REST views on the path before migration 0014 (the person's counts counted, not read)."""
    if not on:
        yield
        return
    counts, mine_count, plan = selectors.queue_counts, selectors.queue_mine_count, selectors._mine_plan
    selectors.queue_counts = functools.partial(counts, from_counters=False)
    selectors.queue_mine_count = lambda *args, **kwargs: None  # the paginator counts the page (capped)
    selectors._mine_plan = lambda *args, **kwargs: "exists"  # the mine filter as an EXISTS
    own_list = team.QueueView.list
    team.QueueView.list = generics.ListAPIView.list  # with PostgreSQL's JIT, as before
    try:
        yield
    finally:
        selectors.queue_counts, selectors.queue_mine_count, selectors._mine_plan = counts, mine_count, plan
        team.QueueView.list = own_list


def run_size(project: Project, user, client: Client, repeats: int, baseline_repeats: int, old_repeats: int,
             rng: random.Random, only: list[str] | None = None):
    base = f"/api/projects/{project.pk}"
    traces = Trace.objects.filter(project=project).order_by("id")
    audits = selectors.audit_list(project)
    prompts = Prompt.objects.filter(project=project).order_by("id")
    # The cursors of the deep pages (reads of every row at 1M: seconds), unless --only leaves those out.
    deep_cases = ("queue: deep page, cursor", "queue: deep page, offset (baseline)", "traces: deep page, cursor",
                  "traces: deep page, offset (baseline)", "audit: deep page, cursor",
                  "audit: deep page, offset (baseline)", "prompts: deep page, cursor",
                  "queue: lowest_score, deep page (triage)", "queue: confident_wrong, deep page (triage)",
                  "queue: confident_wrong, deep wrong (triage)")
    deep = not only or any(o in name for o in only for name in deep_cases)
    deep_traces = deep_audit = deep_prompts = lowest_cursors = wrong_cursors = wrong_cursors_0 = []
    asc, desc = [Key("id", False, True)], [Key("id", True, False)]

    def cur(keys, i):
        return encode_cursor(keys, [i], backwards=False)

    if deep:
        deep_traces = ids_at_depth(traces, rng, repeats)
        deep_audit = ids_at_depth(audits, rng, repeats)
        deep_prompts = ids_at_depth(prompts, rng, repeats)
        # Cursors into the lowest_score order, 50-99% down it (its keys: the score, then id).
        lowest = selectors.queue_list(project, user, order="lowest_score")
        lowest_keys = [Key("triage_score", False, True), Key("id", False, True)]
        lowest_rows = list(lowest.values_list("triage_score", "id"))
        lowest_cursors = [encode_cursor(lowest_keys, list(lowest_rows[int(len(lowest_rows) * rng.uniform(0.5, 0.99))]),
                                        backwards=False) for _ in range(repeats)]

        # Cursors into the confident_wrong order, 50-99% down it (its keys: the rank, the score, id).
        wrong = selectors.queue_list(project, user, order="confident_wrong")
        wrong_keys = [Key("triage_rank", False, True), Key("triage_score", True, True), Key("id", False, True)]
        wrong_rows = list(wrong.values_list("triage_rank", "triage_score", "id"))
        wrong_cursors = [encode_cursor(wrong_keys, list(wrong_rows[int(len(wrong_rows) * rng.uniform(0.5, 0.99))]),
                                       backwards=False) for _ in range(repeats)]
        # And among the wrong ones (rank 0, a score to page by), where there are enough of them.
        scored = [r for r in wrong_rows if r[0] == 0 and r[1] is not None]
        wrong_cursors_0 = [encode_cursor(wrong_keys, list(scored[int(len(scored) * rng.uniform(0.5, 0.99))]),
                                         backwards=False) for _ in range(repeats)]

    cases = {
        "queue (arrival), first page": lambda r: f"{base}/queue/?limit=50",
        "queue: unreviewed": lambda r: f"{base}/queue/?reviewed=false&limit=50",
        "queue: mine, to do": lambda r: f"{base}/queue/?mine=true&reviewed=false&limit=50",
        "queue: disagreement": lambda r: f"{base}/queue/?disagreement=true&limit=50",
        "queue: verdict=reject, safety": lambda r: f"{base}/queue/?verdict=reject&category=safety&limit=50",
        "queue: deep page, cursor": lambda r: f"{base}/queue/?limit=50&cursor={cur(asc, deep_traces[r][0])}",
        "queue: deep page, offset (baseline)": lambda r: f"{base}/queue/?limit=50&offset={deep_traces[r][1]}",
        "traces, first page": lambda r: f"{base}/traces/?limit=50",
        "traces: status=failed": lambda r: f"{base}/traces/?status=failed&limit=50",
        "traces: deep page, cursor": lambda r: f"{base}/traces/?limit=50&cursor={cur(asc, deep_traces[r][0])}",
        "traces: deep page, offset (baseline)": lambda r: f"{base}/traces/?limit=50&offset={deep_traces[r][1]}",
        "audit, first page": lambda r: f"{base}/audit/?limit=50",
        "audit: deep page, cursor": lambda r: f"{base}/audit/?limit=50&cursor={cur(desc, deep_audit[r][0])}",
        "audit: deep page, offset (baseline)": lambda r: f"{base}/audit/?limit=50&offset={deep_audit[r][1]}",
        "prompts, first page": lambda r: f"{base}/prompts/?limit=50",
        "prompts: deep page, cursor": lambda r: f"{base}/prompts/?limit=50&cursor={cur(asc, deep_prompts[r][0])}",
        "queue counts": lambda r: f"{base}/queue/counts/",
        "queue: lowest_score (triage)": lambda r: f"{base}/queue/?order=lowest_score&limit=50",
        "queue: lowest_score, deep page (triage)":
            lambda r: f"{base}/queue/?order=lowest_score&limit=50&cursor={lowest_cursors[r]}",
        "queue: disagreement order (triage)": lambda r: f"{base}/queue/?order=disagreement&limit=50",
        "queue: confident_wrong (triage)": lambda r: f"{base}/queue/?order=confident_wrong&limit=50",
        "queue: confident_wrong, deep page (triage)":
            lambda r: f"{base}/queue/?order=confident_wrong&limit=50&cursor={wrong_cursors[r]}",
        "queue: confident_wrong, deep wrong (triage)":
            lambda r: f"{base}/queue/?order=confident_wrong&limit=50&cursor={wrong_cursors_0[r]}",
    }
    # The queue's personal counts before migration 0014 (same run, same rows): capped fast counts over
    # the person's assignments (``queue_counts(from_counters=False)``), and the mine page counted by the
    # paginator instead of read from the person's counter.
    old_path = {"queue counts (old path)": cases["queue counts"],
                "queue: mine, to do (old path)": cases["queue: mine, to do"]}
    results = {}
    for name, url_for in [*cases.items(), *old_path.items()]:
        if only and not any(o in name for o in only):
            continue
        # The slow baselines (seconds a request at 1M rows) get fewer repeats.
        n = baseline_repeats if "baseline" in name else repeats
        with _old_path(name in old_path):
            timed_get(client, url_for(0))  # warm-up: plan caches, buffers
            results[name] = stats([timed_get(client, url_for(r)) for r in range(n)])
    if "queue counts" in results:  # what each path answers, against the counts computed exactly
        mine = selectors._mine(project, user)
        exact = {"assigned": mine.count(), "done": mine.filter(selectors._reviewed_by(user)).count(),
                 "prompts_without_trace": selectors._untraced_assigned(project, user).count()}
        for label, answer in (("counters", selectors.queue_counts(project, user)),
                              ("old path", selectors.queue_counts(project, user, from_counters=False))):
            print(f"  queue counts, {label}: " + ", ".join(
                f"{k} {answer[k]:,}" for k in ("assigned", "done", "left", "prompts_without_trace")
            ) + f", mine_exact {answer['mine_exact']}", flush=True)
        print(f"  exact: assigned {exact['assigned']:,}, done {exact['done']:,}, left "
              f"{exact['assigned'] - exact['done']:,}, prompts_without_trace {exact['prompts_without_trace']:,}",
              flush=True)
    if only:
        return results, {"fast_count": 0, "exact": None, "true": traces.count()}

    def count_times(fn, n=repeats):
        if n == 0:
            return None
        fn()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
        return stats(out)

    # The triage orders' first page (50 rows, the SQL alone): the keys read from the trace's columns
    # against the correlated subqueries over StepScore (the path before migration 0010), same run.
    for order in ("lowest_score", "disagreement"):
        results[f"sql: {order} page, subqueries (baseline)"] = count_times(
            lambda order=order: list(selectors.queue_list(project, user, order=order, from_scores=True)[:50]),
            n=baseline_repeats)
        results[f"sql: {order} page, columns"] = count_times(
            lambda order=order: list(selectors.queue_list(project, user, order=order)[:50]))
    # confident_wrong: the columns against the path before migration 0013 (``from_scores``: the answer
    # check of every finished trace in Python, an ORDER BY CASE over the id lists, the mean step score
    # from StepScore; 40+ s a page at 1M, so ``old_repeats``).
    results["sql: confident_wrong page, answer_check (baseline)"] = count_times(
        lambda: list(selectors.queue_list(project, user, order="confident_wrong", from_scores=True)[:50]),
        n=old_repeats)
    results["sql: confident_wrong page, columns"] = count_times(
        lambda: list(selectors.queue_list(project, user, order="confident_wrong")[:50]))
    queue_qs = selectors.queue_list(project, user)
    results["count: traces, exact COUNT(*) (baseline)"] = count_times(lambda: traces.count())
    results["count: traces, fast_count"] = count_times(lambda: fast_count(traces))
    results["count: queue, exact COUNT(*) (baseline)"] = count_times(lambda: queue_qs.count())
    results["count: queue, fast_count"] = count_times(lambda: fast_count(queue_qs))
    n, exact = fast_count(traces)
    return results, {"fast_count": n, "exact": exact, "true": traces.count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="trace counts, ascending, comma-separated")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--baseline-repeats", type=int, default=10, help="for the offset pages")
    parser.add_argument("--old-repeats", type=int, default=3,
                        help="for confident_wrong's path before migration 0013 (0: skip it)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--project", type=int, help="reuse the project of an earlier run (seeded already)")
    parser.add_argument("--cleanup", action="store_true", help="delete the benchmark project afterwards")
    parser.add_argument("--only", help="run only the cases whose names contain one of these (comma-separated), "
                        "e.g. 'queue counts,mine' (the queue's counters, new and old path)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    call_command("migrate", verbosity=0)
    setup_test_environment()  # lets the test client's "testserver" host through ALLOWED_HOSTS
    rng = random.Random(args.seed)
    if args.project:  # a project an earlier run seeded (it printed its id): only the difference is added
        project = Project.objects.get(pk=args.project)
        user = project.created_by
    else:
        user = get_user_model().objects.create_user(username=f"bench-lists-{os.getpid()}")
        project = project_create(owner=user, name=f"bench-lists-{os.getpid()}")
    print(f"project {project.pk}", flush=True)
    client = Client()
    client.force_login(user)
    table: dict[int, dict] = {}
    try:
        for size in sizes:
            seed_s, check_s = grow(project, user, size)
            only = [o for o in (args.only or "").split(",") if o]
            res, count = run_size(project, user, client, args.repeats, args.baseline_repeats, args.old_repeats, rng,
                                  only)
            res = {name: s for name, s in res.items() if s is not None}
            table[size] = res
            print(f"\n== {size:,} traces (seeded in {seed_s:.1f} s, answers checked in {check_s:.1f} s; fast count "
                  f"{count['fast_count']:,} exact={count['exact']}, true {count['true']:,}); {args.repeats} requests "
                  f"per case ({args.baseline_repeats} for baselines, {args.old_repeats} for confident_wrong's old "
                  f"path), cores={os.cpu_count()}", flush=True)
            print(f"{'case':<48} {'p50 ms':>8} {'p95 ms':>8} {'mean ± std ms':>16}")
            for name, s in res.items():
                print(f"{name:<48} {s['p50']:>8.1f} {s['p95']:>8.1f} {s['mean']:>8.1f} ± {s['std']:<6.1f}")
            pairs = [("queue: deep page, offset (baseline)", "queue: deep page, cursor"),
                     ("traces: deep page, offset (baseline)", "traces: deep page, cursor"),
                     ("audit: deep page, offset (baseline)", "audit: deep page, cursor"),
                     ("count: traces, exact COUNT(*) (baseline)", "count: traces, fast_count"),
                     ("count: queue, exact COUNT(*) (baseline)", "count: queue, fast_count"),
                     ("sql: lowest_score page, subqueries (baseline)", "sql: lowest_score page, columns"),
                     ("sql: disagreement page, subqueries (baseline)", "sql: disagreement page, columns"),
                     ("sql: confident_wrong page, answer_check (baseline)", "sql: confident_wrong page, columns"),
                     ("queue counts (old path)", "queue counts"),
                     ("queue: mine, to do (old path)", "queue: mine, to do")]
            for slow, fast in pairs:
                if slow not in res:
                    continue
                print(f"  ratio p95 {slow} / {fast}: {res[slow]['p95'] / res[fast]['p95']:.1f}x")
    finally:
        if args.cleanup:
            cleanup(project)
            user.delete()
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\nflatness: p95 at {hi:,} / p95 at {lo:,}")
        for name in table[hi]:
            if name in table[lo]:
                print(f"  {name:<48} {table[hi][name]['p95'] / table[lo][name]['p95']:>6.2f}")


if __name__ == "__main__":
    main()
