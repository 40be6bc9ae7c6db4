"""Benchmark: snapshot build at scale, the streaming build against the old in-memory build, same run.

Run with the database and Redis environment set (DATABASE_URL, REDIS_URL, as for manage.py), e.g.

    .venv/bin/python bench/snapshot_scale.py --sizes 10000,100000,1000000 --repeats 3

For each size it seeds a throw-away project with that many accepted SFT traces (4 steps, one review
each, a prompt per 10 traces) with ``INSERT … SELECT … generate_series`` (a million traces in well
under a minute), then builds an ``sft`` snapshot ``--repeats`` times with each path, every build in
a fresh child process so that its peak RSS (``ru_maxrss``) is its own:

- ``new``: ``snapshot_build``, the service the Celery task calls (claim, heartbeat, streamed corpus
  → materialise → every file in one pass, atomic rename, audit);
- ``old``: the build as it was before the streaming change (``legacy_write_files`` below, kept here
  as the baseline: the whole corpus in memory, JSONL written, then re-read for each Parquet file
  and the zip), for sizes up to ``--baseline-max``.

Both paths must give the same sha256 and record count at every size where both run; the script
stops if they do not. Printed: records/s and peak RSS, mean ± std over the repeats, the new/old
rate ratio, and the new path's peak-RSS ratio between sizes. The projects are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# As a production worker runs. With DEBUG on, Django keeps the SQL of the last 9,000 queries in
# memory (connection.queries), tens of MiB here, which would be counted as the build's.
os.environ.setdefault("DJANGO_DEBUG", "0")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from annotator.datasets.corpus import CorpusFilter, build_corpus  # noqa: E402
from annotator.datasets.materialise import arrow_schema, materialise  # noqa: E402
from annotator.datasets.writers import SPLITS, with_split, write_hf_zip, write_jsonl, write_parquet  # noqa: E402
from annotator.models import DatasetSnapshot, Project  # noqa: E402
from annotator.services.projects import project_create  # noqa: E402
from annotator.services.snapshots import (  # noqa: E402
    FORMATS,
    _split_name,
    snapshot_build,
    snapshot_dataset_name,
    snapshot_dir,
)

STEPS = ["1. Read the question and list the numbers given.", "2. 12 + 30 = 42.", "3. 42 - 5 = 37.",
         "4. 37 + 8 = 45, so the answer is 45."]


# --- seeding ------------------------------------------------------------------------------------

def seed(n: int, user: Any) -> int:
    """A project with ``n`` accepted, finished traces (as bench/export.py makes, in SQL)."""
    project = project_create(owner=user, name=f"bench-snapshot-{n}-{os.getpid()}")
    prompts = max(1, n // 10)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            """INSERT INTO annotator_prompt (messages, category, reference_answer, metadata, created_at, project_id)
               SELECT jsonb_build_array(jsonb_build_object('role', 'user',
                        'content', 'Compute 12 + 30 - 5 + 8 (variant ' || i || ').')),
                      'knowledge', '45', '{}'::jsonb, now(), %s
               FROM generate_series(0, %s - 1) AS i""",
            [project.pk, prompts],
        )
        # Trace i asks prompt i mod prompts and is created 1 µs after trace i-1.
        cur.execute(
            """WITH p AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM annotator_prompt
                          WHERE project_id = %s)
               INSERT INTO annotator_trace (sampling_params, status, finish_reason, final_answer, prompt_tokens,
                   completion_tokens, version, error, mode, pause_reason, review_count, verdict, disputed,
                   created_at, updated_at, project_id, prompt_id)
               SELECT '{}'::jsonb, 'finished', 'stop', '45', 0, 0, 1, '', 'live', '', 1, 'accept', false,
                      now() + i * interval '1 microsecond', now(), %s, p.id
               FROM generate_series(0, %s - 1) AS i JOIN p ON p.k = i %% %s
               ORDER BY i""",
            [project.pk, project.pk, n, prompts],
        )
        cur.execute(
            """INSERT INTO annotator_step (index, text, origin, created_at, trace_id)
               SELECT k, (%s::text[])[k + 1], 'model', now(), t.id
               FROM annotator_trace t CROSS JOIN generate_series(0, %s - 1) AS k WHERE t.project_id = %s""",
            [STEPS, len(STEPS), project.pk],
        )
        cur.execute(
            """INSERT INTO annotator_tracereview (verdict, safety_label, value_label, knowledge_label, note,
                   created_at, updated_at, annotator_id, trace_id)
               SELECT 'accept', '', '', '', '', now(), now(), %s, t.id
               FROM annotator_trace t WHERE t.project_id = %s""",
            [user.pk, project.pk],
        )
    with connection.cursor() as cur:
        for table in ("annotator_prompt", "annotator_trace", "annotator_step", "annotator_tracereview"):
            cur.execute(f"ANALYZE {table}")
    return project.pk


def delete_project(project_id: int) -> None:
    # Raw deletes of the big tables: the ORM's cascade collector would load every row first. The
    # ORM then deletes the project and its few other rows (snapshots, audit, members).
    with transaction.atomic(), connection.cursor() as cur:
        t = "SELECT id FROM annotator_trace WHERE project_id = %s"
        cur.execute(f"DELETE FROM annotator_step WHERE trace_id IN ({t})", [project_id])
        cur.execute(f"DELETE FROM annotator_tracereview WHERE trace_id IN ({t})", [project_id])
        cur.execute("DELETE FROM annotator_trace WHERE project_id = %s", [project_id])
        cur.execute("DELETE FROM annotator_prompt WHERE project_id = %s", [project_id])
    for snapshot in DatasetSnapshot.objects.filter(project_id=project_id):
        shutil.rmtree(snapshot_dir(snapshot), ignore_errors=True)
    Project.objects.filter(pk=project_id).delete()


# --- the old build, kept as the baseline ----------------------------------------------------------

def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def legacy_write_files(snapshot: DatasetSnapshot, folder: Path) -> dict[str, Any]:
    """``annotator.services.snapshots._write_files`` as it was before the streaming build (commit
    56b0704), with the library functions it called, which are unchanged."""
    corpus_filter = CorpusFilter.from_json(snapshot.filters)
    corpus = build_corpus(snapshot.project, kind=snapshot.kind, filters=corpus_filter)
    jsonl = folder / FORMATS["jsonl"][0]
    records = materialise(
        snapshot.kind, corpus, images=corpus_filter.images, redundant_steps=corpus_filter.redundant_steps
    )
    with open(jsonl, "wb") as fh:
        write_jsonl(with_split(records, eval_fraction=snapshot.eval_fraction, seed=snapshot.seed), fh)
    del corpus, records
    first = next(_read_jsonl(jsonl), None)
    schema = arrow_schema(snapshot.kind, with_images=bool(first and "images" in first), with_split=True)
    write_parquet(_read_jsonl(jsonl), folder / FORMATS["parquet"][0], schema=schema)
    with ExitStack() as stack:
        outs = {s: stack.enter_context(open(folder / _split_name(FORMATS["jsonl"][0], s), "wb")) for s in SPLITS}
        with open(jsonl, "rb") as src:
            for line in src:
                outs[json.loads(line)["split"]].write(line)
    for split in SPLITS:
        write_parquet(
            _read_jsonl(folder / _split_name(FORMATS["jsonl"][0], split)),
            folder / _split_name(FORMATS["parquet"][0], split),
            schema=schema,
        )
    with open(folder / FORMATS["hf"][0], "wb") as fh:
        info = write_hf_zip(
            _read_jsonl(jsonl),
            fh,
            kind=snapshot.kind,
            name=snapshot_dataset_name(snapshot),
            seed=snapshot.seed,
            eval_fraction=snapshot.eval_fraction,
            provenance={"project": snapshot.project_id, "snapshot": snapshot.pk, "filters": snapshot.filters},
        )
    return {"sha256": info["sha256"], "record_count": info["count"]}


# --- one build in a child process ------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def _cpu_of(pid: int) -> float | None:
    """CPU seconds of a local process (the PostgreSQL backend serving this build), if readable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def child(path: str, snapshot_id: int) -> None:
    import datasets  # noqa: F401  (both paths import it for the card; import it before the clock)
    import pyarrow.parquet  # noqa: F401

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
    rss_before, pg_before, cpu_before = _rss(), _cpu_of(backend), time.process_time()
    t0 = time.perf_counter()
    if path == "new":
        snapshot = snapshot_build(snapshot_id=snapshot_id)
        assert snapshot.status == "ready", snapshot.error
        sha, count = snapshot.sha256, snapshot.record_count
    else:
        snapshot = DatasetSnapshot.objects.select_related("project").get(pk=snapshot_id)
        folder = Path(tempfile.mkdtemp(prefix="legacy-", dir=os.environ.get("SAFELADDER_DATA_DIR")))
        try:
            info = legacy_write_files(snapshot, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        sha, count = info["sha256"], info["record_count"]
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu_before
    pg_after = _cpu_of(backend)
    pg = None if pg_before is None or pg_after is None else pg_after - pg_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "cpu": cpu, "pg_cpu": pg, "peak_rss": peak, "rss_before": rss_before,
                      "sha256": sha, "count": count}))


def run_child(path: str, snapshot_id: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--snapshot", str(snapshot_id)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _grew(r: dict[str, Any]) -> float:
    return (r["peak_rss"] - r["rss_before"]) / 2**20


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated record counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-max", type=int, default=100_000,
                        help="largest size the old build runs at (it holds the whole corpus in memory)")
    parser.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.snapshot)
        return

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    user = get_user_model().objects.create_user(username=f"bench-snapshot-{os.getpid()}")
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    try:
        for n in sizes:
            t0 = time.perf_counter()
            project_id = seed(n, user)
            print(f"seeded {n:,} traces in {time.perf_counter() - t0:.1f} s", flush=True)
            try:
                paths = ["new", "old"] if n <= args.baseline_max else ["new"]
                for _ in range(args.repeats):
                    for path in paths:  # interleaved, so a slow spell of the machine hits both
                        snapshot = DatasetSnapshot.objects.create(
                            project_id=project_id, kind="sft", eval_fraction=0.1, created_by=user)
                        r = run_child(path, snapshot.pk)
                        assert r["count"] == n, (path, r["count"], n)
                        results.setdefault((n, path), []).append(r)
                        print(f"  {path} {n:>9,}: {r['seconds']:6.2f} s  {n / r['seconds']:>9,.0f} rec/s  "
                              f"CPU {r['cpu']:6.2f} s + PostgreSQL {r['pg_cpu'] or 0:5.2f} s  "
                              f"peak RSS {r['peak_rss'] / 2**20:6.0f} MiB (build +{_grew(r):.0f})", flush=True)
                shas = {r["sha256"] for path in paths for r in results[(n, path)]}
                assert len(shas) == 1, f"the builds disagree on the content hash at {n}: {shas}"
            finally:
                delete_project(project_id)
    finally:
        user.delete()

    print(f"\nkind=sft  cores={os.cpu_count()}  repeats={args.repeats}  (mean ± std; each build in its own process)")
    print("records/CPU s: records per CPU second of the build process and its PostgreSQL backend together")
    print(f"{'records':>9} {'path':>4} {'build s':>14} {'records/s':>20} {'records/CPU s':>20} "
          f"{'peak RSS MiB':>14} {'build +MiB':>12} {'new/old rate':>13} {'new/old per CPU':>16}")

    def rates(runs: list[dict[str, Any]], n: int) -> tuple[tuple[float, float], tuple[float, float]]:
        return (mean_std([n / r["seconds"] for r in runs]),
                mean_std([n / (r["cpu"] + (r["pg_cpu"] or 0)) for r in runs]))

    for n in sizes:
        for path in ("new", "old"):
            runs = results.get((n, path))
            if not runs:
                continue
            secs = mean_std([r["seconds"] for r in runs])
            rate, per_cpu = rates(runs, n)
            rss = mean_std([r["peak_rss"] / 2**20 for r in runs])
            grew = mean_std([_grew(r) for r in runs])
            ratio = ratio_cpu = ""
            if path == "new" and (n, "old") in results:
                old_rate, old_cpu = rates(results[(n, "old")], n)
                ratio, ratio_cpu = f"{rate[0] / old_rate[0]:.2f}x", f"{per_cpu[0] / old_cpu[0]:.2f}x"
            print(f"{n:>9,} {path:>4} {secs[0]:>7.2f} ± {secs[1]:<4.2f} {rate[0]:>11,.0f} ± {rate[1]:<6,.0f} "
                  f"{per_cpu[0]:>11,.0f} ± {per_cpu[1]:<6,.0f} {rss[0]:>6.0f} ± {rss[1]:<4.0f} "
                  f"{grew[0]:>5.0f} ± {grew[1]:<4.0f} {ratio:>13} {ratio_cpu:>16}")
    new_peaks = {n: statistics.fmean(r["peak_rss"] for r in results[(n, "new")]) for n in sizes}
    base = sizes[0] if len(sizes) == 1 else next((n for n in sizes if n >= 100_000), sizes[0])
    for n in sizes:
        if n > base:
            print(f"new path peak RSS {n:,} / {base:,}: {new_peaks[n] / new_peaks[base]:.3f}")


if __name__ == "__main__":
    main()
