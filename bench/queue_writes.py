"""Benchmark: what the queue's counters (migrations 0014-0016: triggers on assignments, traces and
reviews) add to the writes, on a project seeded by bench/lists.py, with the triggers against the
same writes with those triggers disabled, in the same run.

    DATABASE_URL=… .venv/bin/python bench/queue_writes.py --project <id> --repeats 30 [--seed 100000]

Each write runs in a transaction that is rolled back (the project is left as it was): a review
saved by the service (``trace_review_set``: an INSERT, the trace's summary, the audit event) on a
trace assigned to the project's owner and one nobody has; a trace inserted by the ORM on an assigned
prompt; a status change to ``failed``; a batch INSERT of 10,000 traces (2,000 prompts, a tenth
assigned) and its DELETE. It prints p50 / p95 / mean ± std per case, with and without. With
``--seed N``, also bench/lists.py's seeding of a new project of N traces (its SQL statements, each
timed: prompts, traces, steps, scores, reviews, assignments, audit events), off / on / off / on,
each rolled back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402

from annotator.models import Assignment, Project, Trace, TraceStatus  # noqa: E402
from annotator.services.labels import trace_review_set  # noqa: E402

TRIGGERS = {  # the triggers of migrations 0014-0016 (0015: the project's totals)
    "annotator_assignment": ["annotator_assignment_counts_guard", "annotator_assignment_recount_insert",
                             "annotator_assignment_recount_move", "annotator_assignment_recount_delete",
                             "annotator_assignment_counter_insert", "annotator_assignment_counter_update",
                             "annotator_assignment_counter_delete"],
    "annotator_trace": ["annotator_trace_queue_insert", "annotator_trace_queue_delete", "annotator_trace_queue_update",
                        "annotator_trace_has_trace_move", "annotator_trace_totals_insert",
                        "annotator_trace_totals_delete", "annotator_trace_totals_update"],
    "annotator_tracereview": ["annotator_tracereview_queue_insert", "annotator_tracereview_queue_delete",
                              "annotator_tracereview_queue_update"],
}

BATCH = """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status, finish_reason, prompt_tokens,
              completion_tokens, version, error, mode, pause_reason, review_count, verdict, disputed, created_at,
              updated_at)
           SELECT %s, p.id, '{}', 'finished', 'stop', 0, 0, 1, '', 'live', '', 0, '', false, now(), now()
           FROM (SELECT id FROM annotator_prompt WHERE project_id = %s ORDER BY id LIMIT 2000) p
           CROSS JOIN generate_series(1, 5)"""


def stats(times: list[float]) -> str:
    t = sorted(times)
    return (f"{statistics.median(t):8.2f} {t[min(len(t) - 1, int(0.95 * len(t)))]:8.2f} "
            f"{statistics.fmean(t):8.2f} ± {statistics.stdev(t) if len(t) > 1 else 0.0:.2f}")


def timed(fn, repeats: int, *, triggers: bool) -> list[float]:
    out = []
    for _ in range(repeats + 1):
        with transaction.atomic():
            if not triggers:
                with connection.cursor() as cur:
                    _disable(cur)
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
            transaction.set_rollback(True)
    return out[1:]  # the first one warms up


def seed_cost(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lists  # bench/lists.py: its seeding SQL
    from django.contrib.auth import get_user_model

    from annotator.services.projects import project_create

    for triggers in (False, True, False, True):
        with transaction.atomic():
            user = get_user_model().objects.create_user(username=f"bench-writes-{os.getpid()}-{time.time()}")
            project = project_create(owner=user, name=f"bench-writes-{time.time()}")
            with connection.cursor() as cur:
                if not triggers:
                    _disable(cur)
                cur.execute("SELECT coalesce(max(id), 0) FROM annotator_prompt")
                last_prompt = cur.fetchone()[0]
                cur.execute("SELECT coalesce(max(id), 0) FROM annotator_trace")
                last_trace = cur.fetchone()[0]
                args = {"p": project.pk, "u": user.pk, "p0": 0, "p1": n // lists.TRACES_PER_PROMPT,
                        "last_prompt": last_prompt, "last_trace": last_trace}
                times = []
                for sql in lists.SEED_SQL:
                    t0 = time.perf_counter()
                    cur.execute(sql, args)
                    times.append(time.perf_counter() - t0)
            print(f"seed of {n:,} traces, triggers {'on ' if triggers else 'off'}: {sum(times):.1f} s "
                  f"(prompts, traces, steps, scores, reviews, assignments, audit: "
                  f"{' '.join(f'{t:.1f}' for t in times)})", flush=True)
            transaction.set_rollback(True)


def _disable(cur) -> None:
    for table, names in TRIGGERS.items():
        for name in names:
            cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=int, required=True, help="a project bench/lists.py seeded")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="also time bench/lists.py's seeding of N traces")
    args = parser.parse_args()
    project = Project.objects.get(pk=args.project)
    user = project.created_by
    mine = Assignment.objects.filter(project=project, annotator=user).values("prompt_id")
    assigned = list(Trace.objects.filter(project=project, prompt_id__in=mine, review_count=0)
                    .exclude(status=TraceStatus.FAILED).order_by("id")[:args.repeats + 1])
    other = list(Trace.objects.filter(project=project, review_count=0).exclude(prompt_id__in=mine)
                 .order_by("id")[:args.repeats + 1])
    prompt = Assignment.objects.filter(project=project, annotator=user).first().prompt
    it = {"a": iter(assigned * 2), "o": iter(other * 2)}
    cases = {
        "review saved (service), assigned trace": lambda: trace_review_set(trace=next(it["a"]), annotator=user,
                                                                            verdict="accept"),
        "review saved (service), unassigned trace": lambda: trace_review_set(trace=next(it["o"]), annotator=user,
                                                                              verdict="accept"),
        "trace inserted (ORM), assigned prompt": lambda: Trace.objects.create(project=project, prompt=prompt),
        "trace to failed (UPDATE), assigned": lambda: Trace.objects.filter(pk=next(it["a"]).pk).update(
            status=TraceStatus.FAILED),
    }

    def batch() -> None:
        with connection.cursor() as cur:
            cur.execute(BATCH, [project.pk, project.pk])
            cur.execute("DELETE FROM annotator_trace WHERE project_id = %s AND id > (SELECT max(id) - 10000 "
                        "FROM annotator_trace)", [project.pk])

    print(f"project {project.pk}: {Trace.objects.filter(project=project).count():,} traces, "
          f"{Assignment.objects.filter(project=project).count():,} assignments; {args.repeats} writes a case, "
          f"each rolled back; cores={os.cpu_count()}")
    print(f"{'case':<48} {'triggers':>9} {'p50 ms':>8} {'p95 ms':>8} {'mean ± std ms':>16}")
    for name, fn in [*cases.items(), ("batch of 10,000 traces: INSERT + DELETE", batch)]:
        n = max(3, args.repeats // 10) if name.startswith("batch") else args.repeats
        for triggers in (False, True):
            it["a"], it["o"] = iter(assigned * 2), iter(other * 2)
            print(f"{name:<48} {'on' if triggers else 'off':>9} {stats(timed(fn, n, triggers=triggers))}",
                  flush=True)
    if args.seed:
        seed_cost(args.seed)


if __name__ == "__main__":
    main()
