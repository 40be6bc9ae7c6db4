"""Benchmark: dataset snapshot build and JSONL download, against PostgreSQL COPY of the same rows.

Run with the database environment set (DATABASE_URL, as for manage.py), e.g.

    .venv/bin/python bench/export.py --records 100000 --small 10000

For each size it creates a throw-away project with that many accepted SFT traces (4 steps, one
review each; bulk inserts), builds a snapshot through the real service (``snapshot_build``: ORM →
Corpus → materialise → JSONL, Parquet, HF zip), downloads the JSONL through the real URL, view and
FileResponse with Django's test client, and streams the equivalent rows with
``COPY (SELECT json_build_object(...)) TO STDOUT``. Memory: tracemalloc peak per phase (Python
allocations) and the process's peak RSS. The project, its rows and files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from annotator.models import DatasetSnapshot, Prompt, Step, Trace, TraceReview  # noqa: E402
from annotator.services.projects import project_create  # noqa: E402
from annotator.services.snapshots import snapshot_build, snapshot_dir  # noqa: E402

STEPS = ["1. Read the question and list the numbers given.", "2. 12 + 30 = 42.", "3. 42 - 5 = 37.",
         "4. 37 + 8 = 45, so the answer is 45."]
BATCH = 5000


def populate(n: int, user) -> int:
    project = project_create(owner=user, name=f"bench-export-{n}")
    prompts = Prompt.objects.bulk_create(
        [Prompt(project=project, messages=[{"role": "user", "content": f"Compute 12 + 30 - 5 + 8 (variant {i})."}],
                category="knowledge", reference_answer="45") for i in range(max(1, n // 10))],
        batch_size=BATCH,
    )
    for start in range(0, n, BATCH):
        traces = Trace.objects.bulk_create(
            [Trace(project=project, prompt=prompts[i % len(prompts)], status="finished", final_answer="45")
             for i in range(start, min(n, start + BATCH))]
        )
        Step.objects.bulk_create([Step(trace=t, index=k, text=s) for t in traces for k, s in enumerate(STEPS)])
        TraceReview.objects.bulk_create([TraceReview(trace=t, annotator=user, verdict="accept") for t in traces])
    return project.pk


COPY_SQL = """
COPY (
  SELECT json_build_object(
    'messages', (p.messages::jsonb || jsonb_build_array(jsonb_build_object('role', 'assistant', 'content',
        E'<think>\\n' || (SELECT string_agg(s.text, E'\\n' ORDER BY s.index) FROM annotator_step s
                          WHERE s.trace_id = t.id) || E'\\n</think>\\n' || t.final_answer))),
    'prompt_id', p.id::text, 'category', p.category, 'trace_ids', json_build_array(t.id::text),
    'annotators', (SELECT json_agg(u.username) FROM annotator_tracereview r JOIN auth_user u ON u.id = r.annotator_id
                   WHERE r.trace_id = t.id AND r.verdict = 'accept'),
    'model_version', NULL)
  FROM annotator_trace t JOIN annotator_prompt p ON p.id = t.prompt_id
  WHERE t.project_id = %s AND t.final_answer IS NOT NULL
    AND EXISTS (SELECT 1 FROM annotator_tracereview r WHERE r.trace_id = t.id AND r.verdict = 'accept')
    AND NOT EXISTS (SELECT 1 FROM annotator_tracereview r WHERE r.trace_id = t.id AND r.verdict = 'reject')
  ORDER BY t.id
) TO STDOUT
"""


def copy_rows(project_id: int) -> tuple[int, float]:
    connection.ensure_connection()
    pg = connection.connection  # the psycopg 3 connection under Django's wrapper
    rows = 0
    t0 = time.perf_counter()
    with pg.cursor() as cur, cur.copy(COPY_SQL.replace("%s", str(int(project_id)))) as copy:
        for chunk in copy:
            rows += bytes(chunk).count(b"\n")
    return rows, time.perf_counter() - t0


def delete_project(project_id: int) -> None:
    # Raw deletes: the ORM's cascade collector would load every one of the rows first.
    with transaction.atomic(), connection.cursor() as cur:
        t = "SELECT id FROM annotator_trace WHERE project_id = %s"
        cur.execute(f"DELETE FROM annotator_steplabel WHERE step_id IN (SELECT id FROM annotator_step WHERE trace_id IN ({t}))", [project_id])  # noqa: E501
        cur.execute(f"DELETE FROM annotator_step WHERE trace_id IN ({t})", [project_id])
        cur.execute(f"DELETE FROM annotator_tracereview WHERE trace_id IN ({t})", [project_id])
        for table in ("annotator_datasetsnapshot", "annotator_trace", "annotator_prompt", "annotator_membership"):
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", [project_id])
        cur.execute("DELETE FROM annotator_project WHERE id = %s", [project_id])


def run(n: int, kind: str, user, client: Client, build_memory: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    project_id = populate(n, user)
    populate_s = time.perf_counter() - t0
    # The row is made directly (not snapshot_create) so no task is queued for a worker that would
    # race this process; the build is the same service call the task makes.
    snapshot = DatasetSnapshot.objects.create(project_id=project_id, kind=kind, eval_fraction=0.1, created_by=user)
    try:
        # Timings run without tracemalloc (it slows allocation-heavy Python several-fold); memory is
        # measured in separate passes of the same work.
        t0 = time.perf_counter()
        snapshot = snapshot_build(snapshot_id=snapshot.pk)
        build_s = time.perf_counter() - t0
        assert snapshot.status == "ready", snapshot.error
        assert snapshot.record_count == n, (snapshot.record_count, n)
        build_peak = float("nan")
        if build_memory:
            again = DatasetSnapshot.objects.create(project_id=project_id, kind=kind, eval_fraction=0.1,
                                                   created_by=user)
            tracemalloc.start()
            snapshot_build(snapshot_id=again.pk)
            build_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            shutil.rmtree(snapshot_dir(again), ignore_errors=True)

        def download() -> tuple[int, int]:
            response = client.get(f"/api/projects/{project_id}/datasets/{snapshot.pk}/download/?format=jsonl")
            assert response.status_code == 200, response.content[:500]
            lines = size = 0
            for chunk in response.streaming_content:
                lines += chunk.count(b"\n")
                size += len(chunk)
            response.close()
            return lines, size

        t0 = time.perf_counter()
        lines, size = download()
        download_s = time.perf_counter() - t0
        assert lines == n
        tracemalloc.start()
        download()
        download_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        copy_n, copy_s = copy_rows(project_id)
        assert copy_n == n, (copy_n, n)
        return {
            "n": n, "populate_s": populate_s, "build_s": build_s, "build_peak": build_peak,
            "download_s": download_s, "download_peak": download_peak, "bytes": size, "copy_s": copy_s,
        }
    finally:
        shutil.rmtree(snapshot_dir(snapshot), ignore_errors=True)
        delete_project(project_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="a second, smaller size to compare memory with")
    parser.add_argument("--kind", default="sft")
    parser.add_argument("--build-memory", action="store_true", help="also trace the build's peak memory (slow)")
    args = parser.parse_args()

    setup_test_environment()  # lets the test client's "testserver" host through ALLOWED_HOSTS
    user = get_user_model().objects.create_user(username=f"bench-export-{os.getpid()}")
    client = Client()
    client.force_login(user)
    results = []
    try:
        run(200, args.kind, user, client, False)  # warm-up: imports, URL resolver, first queries
        for n in sorted({args.small, args.records}):
            results.append(run(n, args.kind, user, client, args.build_memory))
    finally:
        user.delete()

    mib = 1024 * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nkind={args.kind}  cores={os.cpu_count()}  process peak RSS={rss:.0f} MiB")
    print(f"{'records':>8} {'insert s':>9} {'build s':>8} {'build rec/s':>12} {'build peak':>11} "
          f"{'JSONL rec/s':>12} {'MiB/s':>7} {'dl peak':>8} {'COPY rec/s':>11} {'JSONL/COPY':>11}")
    for r in results:
        dl_rate = r["n"] / r["download_s"]
        copy_rate = r["n"] / r["copy_s"]
        print(f"{r['n']:>8} {r['populate_s']:>9.1f} {r['build_s']:>8.1f} {r['n'] / r['build_s']:>12,.0f} "
              f"{r['build_peak'] / mib:>8.0f} MiB {dl_rate:>12,.0f} {r['bytes'] / mib / r['download_s']:>7.0f} "
              f"{r['download_peak'] / mib:>5.1f} MiB {copy_rate:>11,.0f} {dl_rate / copy_rate:>11.1f}")
    print("build = ORM -> Corpus -> materialise -> data.jsonl + data.parquet + dataset.zip (sha256 over all records)")
    print("JSONL = GET .../download/?format=jsonl of the frozen file through URL routing, auth, view, FileResponse")


if __name__ == "__main__":
    main()
