"""Benchmark: snapshot build at scale, the streaming build against earlier builds, same run.

Run with the database and Redis environment set (DATABASE_URL, REDIS_URL, as for manage.py), e.g.

    git -C . archive main | tar -x -C /tmp/main-tree   # a checkout of the build to compare with
    .venv/bin/python bench/snapshot_scale.py --sizes 10000,100000,1000000 --repeats 3 --main-tree /tmp/main-tree

For each size it seeds a throw-away project with that many accepted SFT traces (4 steps, one review
each, a prompt per 10 traces) with ``INSERT … SELECT … generate_series`` (a million traces in a few
minutes), then builds an ``sft`` snapshot ``--repeats`` times with each path, interleaved, every
build in a fresh child process so that its peak RSS (``ru_maxrss``) is its own:

- ``new``: ``snapshot_build`` of this checkout, the service the Celery task calls (claim,
  heartbeat, streamed corpus → materialise → every file in one pass, atomic rename, audit);
- ``main``: with ``--main-tree``, ``snapshot_build`` of that checkout (the child imports the
  application from there, with this script's measuring code);
- ``old``: the build as it was before the streaming change (``legacy_write_files`` below, kept here
  as the baseline: the whole corpus in memory, JSONL written, then re-read for each Parquet file
  and the zip), for sizes up to ``--baseline-max``.

Every path must give the same sha256 and record count at every size, and ``new`` and ``main`` the
same bytes in every file (each zip member; the card with the snapshot's id masked); the script
stops if they do not. CPU is the build process's (all its threads) plus its PostgreSQL processes':
the backend of each connection it opens (the build reads on a second one) and their parallel
query workers (``PostgresCpu``). Printed: records/s, records per CPU second, µs of CPU per record,
peak RSS, mean ± std over the repeats, the new/other ratios, and the new path's peak-RSS ratio
between sizes. ``--json`` keeps every build's figures. The projects are deleted afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The ``main`` path's child imports the application from another checkout (``--main-tree``), with
# this script's measuring code: both builds are measured the same way.
CODE_ROOT = Path(os.environ.get("SNAPSHOT_BENCH_CODE_ROOT") or ROOT)
sys.path.insert(0, str(CODE_ROOT))
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


class PostgresCpu:
    """CPU seconds of the PostgreSQL processes serving this process: the backend of every database
    connection it opens (a build may read on a second connection, in a reader thread) and their
    parallel query workers, which PostgreSQL starts per query and which exit with it.

    A backend's CPU is read when its connection closes (its process then exits) or at ``total``.
    Workers are found by polling the postmaster's children every 20 ms; a worker's CPU counts up to
    its last poll, so that part is a lower bound (``workers`` says how many were seen)."""

    def __init__(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.signals import connection_created

        self.start: dict[int, float] = {}  # backend pid → CPU when first seen
        self.end: dict[int, float] = {}  # backend pid → CPU at its connection's close
        self.seen_workers: dict[int, float] = {}  # worker pid → CPU at its last poll
        self.postmaster: int | None = None
        self._stop = threading.Event()
        connection_created.connect(self._created, weak=False)
        original_close = BaseDatabaseWrapper.close
        tracker = self

        def close(wrapper: Any) -> None:
            pid = getattr(wrapper, "_bench_backend", None)
            if pid is not None and pid not in tracker.end:
                tracker.end[pid] = _cpu_of(pid) or 0.0
            original_close(wrapper)

        BaseDatabaseWrapper.close = close
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def _created(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        with connection.connection.cursor() as cur:  # the raw connection: no Django wrapper here
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        connection._bench_backend = pid
        self.start[pid] = _cpu_of(pid) or 0.0
        if self.postmaster is None:
            with open(f"/proc/{pid}/stat") as fh:
                self.postmaster = int(fh.read().rsplit(")", 1)[1].split()[1])

    def begin(self) -> None:
        from django.db import connections

        for alias in connections:  # the connections open now are counted from here on
            wrapper = connections[alias]
            pid = getattr(wrapper, "_bench_backend", None)
            if pid is not None:
                self.start[pid] = _cpu_of(pid) or 0.0
        self._poller.start()

    def _poll(self) -> None:
        leaders: set[str] = set()
        while not self._stop.wait(0.02):
            if self.postmaster is None:
                continue
            leaders = {f"parallel worker for PID {pid}" for pid in self.start}
            try:
                with open(f"/proc/{self.postmaster}/task/{self.postmaster}/children") as fh:
                    pids = [int(p) for p in fh.read().split()]
            except OSError:
                continue
            for pid in pids:
                if pid in self.start:
                    continue
                if pid not in self.seen_workers:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as fh:
                            cmd = fh.read().decode(errors="replace")
                    except OSError:
                        continue
                    if not any(leader in cmd for leader in leaders):
                        self.seen_workers[pid] = -1.0  # another process: never counted
                        continue
                if self.seen_workers.get(pid, 0.0) >= -0.5:
                    cpu = _cpu_of(pid)
                    if cpu is not None:
                        self.seen_workers[pid] = cpu

    def total(self) -> tuple[float, int]:
        """(CPU seconds of the backends and workers since ``begin``, number of workers seen)."""
        self._stop.set()
        self._poller.join()
        backends = sum((self.end.get(pid) or _cpu_of(pid) or 0.0) - cpu for pid, cpu in self.start.items())
        workers = [cpu for cpu in self.seen_workers.values() if cpu >= 0]
        return backends + sum(workers), len(workers)


def file_digests(folder: Path, snapshot: DatasetSnapshot) -> dict[str, str]:
    """sha256 of each file of a built snapshot; for the zip, of each member. A zip member's time
    stamp is the time it was written, and the card names the snapshot (its id), so the zip's own
    bytes differ between any two builds: its members are compared, the card with the id masked."""
    digests = {}
    for file in sorted(folder.iterdir()):
        if file.suffix == ".zip":
            with zipfile.ZipFile(file) as zf:
                for name in sorted(zf.namelist()):
                    data = zf.read(name)
                    if name.endswith("README.md"):
                        data = re.sub(rf"\b{snapshot.pk}\b".encode(), b"<id>", data)
                    member = name.replace(f"-{snapshot.pk}/", "-<id>/")
                    digests[f"{file.name}:{member}"] = hashlib.sha256(data).hexdigest()
        else:
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
            digests[file.name] = digest.hexdigest()
    return digests


def child(path: str, snapshot_id: int) -> None:
    import datasets  # noqa: F401  (both paths import it for the card; import it before the clock)
    import pyarrow.parquet  # noqa: F401

    postgres = PostgresCpu()
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    postgres.begin()
    rss_before, cpu_before = _rss(), time.process_time()
    t0 = time.perf_counter()
    folder: Path | None = None
    try:
        if path in ("new", "main"):
            snapshot = snapshot_build(snapshot_id=snapshot_id)
            assert snapshot.status == "ready", snapshot.error
            sha, count = snapshot.sha256, snapshot.record_count
            built = snapshot_dir(snapshot)
        else:
            snapshot = DatasetSnapshot.objects.select_related("project").get(pk=snapshot_id)
            folder = built = Path(tempfile.mkdtemp(prefix="legacy-", dir=os.environ.get("SAFELADDER_DATA_DIR")))
            info = legacy_write_files(snapshot, folder)
            sha, count = info["sha256"], info["record_count"]
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu_before
        pg, workers = postgres.total()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        files = file_digests(built, snapshot)  # after the clock
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "pg_cpu": pg, "pg_workers": workers, "peak_rss": peak,
                      "rss_before": rss_before, "sha256": sha, "count": count, "files": files,
                      "code": str(Path(snapshot_build.__code__.co_filename).parents[2])}))


def run_child(path: str, snapshot_id: int, main_tree: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("SNAPSHOT_BENCH_CODE_ROOT", None)
    if path == "main":
        env["SNAPSHOT_BENCH_CODE_ROOT"] = main_tree
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--snapshot", str(snapshot_id)],
        # In the checkout whose code runs: Celery's app loading puts the working directory first on
        # sys.path, so the child would import the application from there.
        check=True, capture_output=True, text=True, env=env, cwd=main_tree if path == "main" else ROOT,
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
    parser.add_argument("--main-tree", help="a checkout of another commit (e.g. main) whose snapshot_build runs as "
                        "the path 'main', measured the same way; its files must equal the new build's")
    parser.add_argument("--json", help="write every build's figures to this file")
    parser.add_argument("--child", choices=["new", "main", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.snapshot)
        return
    main_tree = str(Path(args.main_tree).resolve()) if args.main_tree else None

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    user = get_user_model().objects.create_user(username=f"bench-snapshot-{os.getpid()}")
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    try:
        for n in sizes:
            t0 = time.perf_counter()
            project_id = seed(n, user)
            print(f"seeded {n:,} traces in {time.perf_counter() - t0:.1f} s", flush=True)
            try:
                paths = ["new", *(["main"] if main_tree else []), *(["old"] if n <= args.baseline_max else [])]
                for _ in range(args.repeats):
                    for path in paths:  # interleaved, so a slow spell of the machine hits every path
                        snapshot = DatasetSnapshot.objects.create(
                            project_id=project_id, kind="sft", eval_fraction=0.1, created_by=user)
                        r = run_child(path, snapshot.pk, main_tree)
                        assert r["count"] == n, (path, r["count"], n)
                        results.setdefault((n, path), []).append(r)
                        print(f"  {path:>4} {n:>9,}: {r['seconds']:6.2f} s  {n / r['seconds']:>9,.0f} rec/s  "
                              f"CPU {r['cpu']:6.2f} s + PostgreSQL {r['pg_cpu']:5.2f} s "
                              f"({r['pg_workers']} parallel workers)  "
                              f"peak RSS {r['peak_rss'] / 2**20:6.0f} MiB (build +{_grew(r):.0f})", flush=True)
                runs = [r for path in paths for r in results[(n, path)]]
                shas = {r["sha256"] for r in runs}
                assert len(shas) == 1, f"the builds disagree on the content hash at {n}: {shas}"
                # The old build wrote data.jsonl with json.dumps' default layout, not canonical JSON:
                # only its content hash is comparable. The new and the main builds' files are.
                streamed = [r for path in paths if path != "old" for r in results[(n, path)]]
                files = {json.dumps(r["files"], sort_keys=True) for r in streamed}
                assert len(files) == 1, f"the builds' files differ at {n}: {[r['files'] for r in streamed]}"
                print(f"  every build: sha256 {shas.pop()}; new and main: {len(streamed[0]['files'])} files "
                      "(zip members) byte-identical", flush=True)
            finally:
                delete_project(project_id)
    finally:
        user.delete()
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n}:{path}": runs for (n, path), runs in results.items()}, indent=1))

    print(f"\nkind=sft  cores={os.cpu_count()}  repeats={args.repeats}  (mean ± std; each build in its own process)")
    print("records/CPU s: records per CPU second of the build process and its PostgreSQL processes together")
    print(f"{'records':>9} {'path':>4} {'build s':>14} {'records/s':>20} {'records/CPU s':>20} {'µs CPU/rec':>11} "
          f"{'PG share':>8} {'peak RSS MiB':>14} {'build +MiB':>12} {'new/x rate':>11} {'new/x per CPU':>14}")

    def rates(runs: list[dict[str, Any]], n: int) -> tuple[tuple[float, float], tuple[float, float]]:
        return (mean_std([n / r["seconds"] for r in runs]),
                mean_std([n / (r["cpu"] + r["pg_cpu"]) for r in runs]))

    for n in sizes:
        for path in ("new", "main", "old"):
            runs = results.get((n, path))
            if not runs:
                continue
            secs = mean_std([r["seconds"] for r in runs])
            rate, per_cpu = rates(runs, n)
            us = statistics.fmean((r["cpu"] + r["pg_cpu"]) / n * 1e6 for r in runs)
            pg_share = statistics.fmean(r["pg_cpu"] / (r["cpu"] + r["pg_cpu"]) for r in runs)
            rss = mean_std([r["peak_rss"] / 2**20 for r in runs])
            grew = mean_std([_grew(r) for r in runs])
            ratio = ratio_cpu = ""
            if path != "new":
                new_rate, new_cpu = rates(results[(n, "new")], n)
                ratio, ratio_cpu = f"{new_rate[0] / rate[0]:.2f}x", f"{new_cpu[0] / per_cpu[0]:.2f}x"
            print(f"{n:>9,} {path:>4} {secs[0]:>7.2f} ± {secs[1]:<4.2f} {rate[0]:>11,.0f} ± {rate[1]:<6,.0f} "
                  f"{per_cpu[0]:>11,.0f} ± {per_cpu[1]:<6,.0f} {us:>11.1f} {pg_share:>8.0%} "
                  f"{rss[0]:>6.0f} ± {rss[1]:<4.0f} {grew[0]:>5.0f} ± {grew[1]:<4.0f} {ratio:>11} {ratio_cpu:>14}")
    new_peaks = {n: statistics.fmean(r["peak_rss"] for r in results[(n, "new")]) for n in sizes}
    base = sizes[0] if len(sizes) == 1 else next((n for n in sizes if n >= 100_000), sizes[0])
    for n in sizes:
        if n > base:
            print(f"new path peak RSS {n:,} / {base:,}: {new_peaks[n] / new_peaks[base]:.3f}")


if __name__ == "__main__":
    main()
