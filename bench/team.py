"""Benchmark: the review queue and "next item" at 100,000 traces and 20 supervisors, against the
plain trace list in the same run.

    SAFELADDER_DATA_DIR=$PWD/.data/bench .venv/bin/python -m webapp.embedded exec -- \\
        .venv/bin/python bench/team.py --traces 100000 --supervisors 20

It migrates the database it is given, then builds a throw-away project with bulk inserts: 20,000
prompts with 5 traces each (3 steps per trace), the supervisors as members, and assignments with
overlap 2 made by the real service (``assignments_distribute``, timed). About a third of the
traces get reviews from their two assignees (a tenth of those disagree); the summary columns are
filled by the same SQL the migration uses. Then every supervisor, logged in with Django's test
client, calls each endpoint through URL routing, auth, the permission gate, the view and the
serializer, ``--rounds`` times; each endpoint reports p50 / p95 / max and its p95 over the plain
trace list's (``GET traces/?limit=50``, the baseline). The project is deleted afterwards.
"""

from __future__ import annotations

import argparse
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

from annotator.models import Assignment, Membership, Prompt, Role, Step, Trace, TraceReview  # noqa: E402
from annotator.services.assignments import assignments_distribute  # noqa: E402
from annotator.services.projects import project_create  # noqa: E402

BATCH = 5000
TRACES_PER_PROMPT = 5
SUMMARY_SQL = """
UPDATE annotator_trace t
SET review_count = s.n, verdict = CASE WHEN s.nv = 1 THEN s.v ELSE '' END, disputed = (s.nv > 1)
FROM (SELECT trace_id, count(*) AS n, count(DISTINCT verdict) AS nv, min(verdict) AS v
      FROM annotator_tracereview GROUP BY trace_id) s
WHERE t.id = s.trace_id AND t.project_id = %s
"""


def populate(n_traces: int, n_people: int, owner, rng: random.Random) -> tuple[int, list, float]:
    project = project_create(owner=owner, name=f"bench-team-{os.getpid()}")
    User = get_user_model()
    people = [User.objects.create_user(username=f"bench-sup-{os.getpid()}-{i}") for i in range(n_people)]
    Membership.objects.bulk_create([Membership(project=project, user=u, role=Role.SUPERVISOR) for u in people])
    n_prompts = max(1, n_traces // TRACES_PER_PROMPT)
    prompts = Prompt.objects.bulk_create(
        [Prompt(project=project, messages=[{"role": "user", "content": f"Compute {i} + 30 - 5 + 8."}],
                category=("knowledge", "safety", "value", "general")[i % 4], reference_answer=str(i + 33))
         for i in range(n_prompts)],
        batch_size=BATCH,
    )
    t0 = time.perf_counter()
    assignments_distribute(project=project, actor=owner, annotators=[u.username for u in people], overlap=2)
    assign_s = time.perf_counter() - t0
    assigned: dict[int, list[int]] = {}
    for prompt_id, user_id in Assignment.objects.filter(project=project).values_list("prompt_id", "annotator_id"):
        assigned.setdefault(prompt_id, []).append(user_id)
    for start in range(0, n_traces, BATCH):
        traces = Trace.objects.bulk_create(
            [Trace(project=project, prompt=prompts[i % n_prompts], status="finished", final_answer="45")
             for i in range(start, min(n_traces, start + BATCH))]
        )
        Step.objects.bulk_create([Step(trace=t, index=k, text=f"{k + 1}. step {k + 1}") for t in traces
                                  for k in range(3)])
        reviews = []
        for t in traces:
            if rng.random() < 1 / 3:
                verdicts = ["accept", "accept"] if rng.random() < 0.9 else ["accept", "reject"]
                for user_id, verdict in zip(assigned[t.prompt_id], verdicts, strict=False):
                    reviews.append(TraceReview(trace=t, annotator_id=user_id, verdict=verdict))
        TraceReview.objects.bulk_create(reviews, batch_size=BATCH)
    with connection.cursor() as cur:
        cur.execute(SUMMARY_SQL, [project.pk])
        cur.execute("ANALYZE")
    return project.pk, people, assign_s


def delete_project(project_id: int, people: list) -> None:
    # Raw deletes: the ORM's cascade collector would load every one of the rows first.
    with transaction.atomic(), connection.cursor() as cur:
        t = "SELECT id FROM annotator_trace WHERE project_id = %s"
        cur.execute(f"DELETE FROM annotator_step WHERE trace_id IN ({t})", [project_id])
        cur.execute(f"DELETE FROM annotator_tracereview WHERE trace_id IN ({t})", [project_id])
        for table in ("annotator_assignment", "annotator_trace", "annotator_prompt", "annotator_membership"):
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", [project_id])
        cur.execute("DELETE FROM annotator_project WHERE id = %s", [project_id])
    get_user_model().objects.filter(pk__in=[u.pk for u in people]).delete()


def measure(clients: list[Client], url_for, rounds: int) -> list[float]:
    times = []
    for r in range(rounds):
        for i, client in enumerate(clients):
            url = url_for(i, r)
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.content[:300]!r}")
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--supervisors", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    setup_test_environment()  # lets the test client's "testserver" host through ALLOWED_HOSTS
    rng = random.Random(13)
    owner = get_user_model().objects.create_user(username=f"bench-owner-{os.getpid()}")
    t0 = time.perf_counter()
    project_id, people, assign_s = populate(args.traces, args.supervisors, owner, rng)
    populate_s = time.perf_counter() - t0
    try:
        clients = []
        for user in people:
            client = Client()
            client.force_login(user)
            clients.append(client)
        ids = list(Trace.objects.filter(project_id=project_id).order_by("id").values_list("id", flat=True))
        base = f"/api/projects/{project_id}"
        cases = [
            ("trace list (baseline)", lambda i, r: f"{base}/traces/?limit=50"),
            ("queue: mine, to do", lambda i, r: f"{base}/queue/?mine=true&reviewed=false&limit=50"),
            ("queue: mine, done", lambda i, r: f"{base}/queue/?mine=true&reviewed=true&limit=50"),
            ("queue: unreviewed", lambda i, r: f"{base}/queue/?reviewed=false&limit=50"),
            ("queue: disagreement", lambda i, r: f"{base}/queue/?disagreement=true&limit=50"),
            ("queue: verdict=accept", lambda i, r: f"{base}/queue/?verdict=accept&limit=50"),
            ("queue: mine, page 20", lambda i, r: f"{base}/queue/?mine=true&limit=50&offset=1000"),
            ("next item", lambda i, r: f"{base}/queue/next/?after={ids[(i * 997 + r * 7919) % len(ids)]}"),
            ("queue counts", lambda i, r: f"{base}/queue/counts/"),
        ]
        for _, url_for in cases:  # warm-up: imports, URL resolver, plan caches
            measure(clients[:2], url_for, 1)
        results = [(name, measure(clients, url_for, args.rounds)) for name, url_for in cases]
    finally:
        delete_project(project_id, people)
        owner.delete()

    baseline = pct(results[0][1], 95)
    print(f"\ntraces={args.traces:,} supervisors={args.supervisors} requests per endpoint="
          f"{args.supervisors * args.rounds} cores={os.cpu_count()}")
    print(f"setup {populate_s:.1f} s, of which assigning {args.traces // TRACES_PER_PROMPT:,} prompts x overlap 2 "
          f"{assign_s:.2f} s")
    print(f"{'endpoint':<24} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p95/baseline':>13}")
    for name, times in results:
        p95 = pct(times, 95)
        print(f"{name:<24} {statistics.median(times):>8.1f} {p95:>8.1f} {max(times):>8.1f} {p95 / baseline:>13.2f}")


if __name__ == "__main__":
    main()
