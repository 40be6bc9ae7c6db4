"""Benchmark: importing 10k and 100k prompts from JSONL through the REST endpoint, time and the web
process's peak memory, against PostgreSQL's COPY of the same rows in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch db> .venv/bin/python bench/import_prompts.py \\
        --sizes 10000,100000 --repeats 3

Each import is ``POST /api/projects/{p}/prompts/import/`` (multipart, token auth) to a real web
server (``python -m webapp.server``: Daphne with the project's request handling) started fresh for
that import in a child process, so its memory is its own: after a 100-line warm-up import, the
child's resident set is read from ``/proc/<pid>/status`` (VmRSS), and after the timed import its
high-water mark (VmHWM); the peak growth is the difference. The same file is then imported by the
service alone (``prompts_import_jsonl`` on the file on disk) in another child process, measured the
same way: what the import itself holds, apart from the web server's handling of the request.
Lines are TRL-conversational or plain ``prompt`` rows with category, reference, metadata and an
id, about 180 bytes each (17.5 MiB for 100k).

The baseline: ``COPY annotator_prompt FROM STDIN`` of the same rows (parsed in Python first) in a
transaction that is rolled back, in the same run. Everything the import does beyond that
(validation of each line twice, the ORM, the audit event, the HTTP upload) is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django

django.setup()

import requests  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from annotator.models import Prompt  # noqa: E402
from annotator.services.projects import project_create  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-import-password"
CATEGORIES = ("knowledge", "safety", "value", "general")


def line(i: int) -> dict:
    if i % 2:
        return {"messages": [{"role": "system", "content": "Answer step by step."},
                             {"role": "user", "content": f"Compute {i} + 30 - 5 + 8, showing each step."}],
                "category": CATEGORIES[i % 4], "reference": str(i + 33), "id": f"src-{i}"}
    return {"prompt": f"Is it safe to mix bleach and ammonia? (variant {i})", "category": "safety",
            "reference": "No.", "metadata": {"source": "bench", "n": i}}


def write_jsonl(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps(line(i)) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kib(pid: int, field: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    raise RuntimeError(field)


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp.server", "-b", "127.0.0.1", "-p", str(self.port), "webapp.asgi:application"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                requests.get(self.url + "/api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the web server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def post_import(server: Server, token: str, project_id: int, path: Path) -> dict:
    with path.open("rb") as f:
        r = requests.post(f"{server.url}/api/projects/{project_id}/prompts/import/",
                          headers={"Authorization": f"Token {token}"},
                          files={"file": (path.name, f, "application/x-ndjson")}, timeout=600)
    if r.status_code != 201:
        raise RuntimeError(f"import: {r.status_code} {r.text[:300]}")
    return r.json()


def copy_baseline(project_id: int, path: Path) -> float:
    """Seconds to parse the file and COPY its rows into annotator_prompt (rolled back)."""
    t0 = time.perf_counter()
    with transaction.atomic():
        with connection.cursor() as cur, cur.copy(
            "COPY annotator_prompt (project_id, messages, category, reference_answer, metadata, created_at) "
            "FROM STDIN"
        ) as copy:
            for raw in path.open():
                obj = json.loads(raw)
                messages = obj.get("messages") or [{"role": "user", "content": obj["prompt"]}]
                copy.write_row((project_id, json.dumps(messages), obj["category"], obj["reference"],
                                json.dumps(obj.get("metadata", {})), "now"))
        elapsed = time.perf_counter() - t0
        transaction.set_rollback(True)
    return elapsed


def service_child(path: str) -> None:
    """In a child process: the import service alone on a file on disk; prints its peak growth (KiB)."""
    from annotator.services.prompts import prompts_import_jsonl

    user = get_user_model().objects.create_user(username=f"bench-import-svc-{os.getpid()}")
    project = project_create(owner=user, name=f"bench-import-svc-{os.getpid()}")
    warm = Path(path).with_suffix(".warm")
    write_jsonl(warm, 100)
    with warm.open("rb") as f:
        prompts_import_jsonl(project=project, actor=user, data=f)
    warm.unlink()
    before = proc_kib(os.getpid(), "VmRSS")
    with open(path, "rb") as f:
        n = len(prompts_import_jsonl(project=project, actor=user, data=f))
    print(json.dumps({"n": n, "growth_kib": proc_kib(os.getpid(), "VmHWM") - before}))


def service_peak_mib(path: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--service-child", str(path)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["growth_kib"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--service-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.service_child:
        service_child(args.service_child)
        return
    sizes = [int(s) for s in args.sizes.split(",")]

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(username=f"bench-import-{os.getpid()}", password=PASSWORD)
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-"))
    warm = tmp / "warm.jsonl"
    write_jsonl(warm, 100)
    results: dict[int, dict[str, list[float]]] = {}
    try:
        for n in sizes:
            path = tmp / f"prompts-{n}.jsonl"
            write_jsonl(path, n)
            mib = path.stat().st_size / 2**20
            res = results[n] = {"seconds": [], "peak_mib": [], "copy_s": [], "rate": [], "service_mib": []}
            for rep in range(args.repeats):
                project = project_create(owner=user, name=f"bench-import-{n}-{rep}")
                server = Server()
                try:
                    token = requests.post(f"{server.url}/api/auth/token/",
                                          json={"username": user.username, "password": PASSWORD}).json()["token"]
                    post_import(server, token, project.pk, warm)
                    before = proc_kib(server.proc.pid, "VmRSS")
                    t0 = time.perf_counter()
                    body = post_import(server, token, project.pk, path)
                    seconds = time.perf_counter() - t0
                    peak = proc_kib(server.proc.pid, "VmHWM")
                finally:
                    server.stop()
                assert body["imported"] == n, body["imported"]
                assert Prompt.objects.filter(project=project).count() == n + 100
                res["seconds"].append(seconds)
                res["rate"].append(n / seconds)
                res["peak_mib"].append((peak - before) / 1024)
                res["copy_s"].append(copy_baseline(project.pk, path))
                res["service_mib"].append(service_peak_mib(path))
                print(f"{n:,} prompts ({mib:.1f} MiB) repeat {rep + 1}: {seconds:.2f} s, {n / seconds:,.0f} prompts/s, "
                      f"peak growth {res['peak_mib'][-1]:.1f} MiB (RSS before {before / 1024:.0f} MiB); "
                      f"COPY {res['copy_s'][-1]:.2f} s; the service alone: peak growth "
                      f"{res['service_mib'][-1]:.1f} MiB",
                      flush=True)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

    def ms(values: list[float]) -> str:
        return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"

    print(f"\ncores={os.cpu_count()} repeats={args.repeats}")
    print(f"{'prompts':>9} {'import s':>14} {'prompts/s':>18} {'web peak MiB':>14} {'service MiB':>13} "
          f"{'COPY s':>12} {'import/COPY':>12}")
    for n, res in results.items():
        ratio = statistics.fmean(res["seconds"]) / statistics.fmean(res["copy_s"])
        print(f"{n:>9,} {ms(res['seconds']):>14} {ms(res['rate']):>18} {ms(res['peak_mib']):>14} "
              f"{ms(res['service_mib']):>13} {ms(res['copy_s']):>12} {ratio:>12.1f}")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        mean = {k: {n: statistics.fmean(results[n][k]) for n in (lo, hi)}
                for k in ("peak_mib", "seconds", "service_mib")}
        print(f"web peak growth {hi:,} / {lo:,}: {mean['peak_mib'][hi] / mean['peak_mib'][lo]:.2f}; "
              f"service peak growth: {mean['service_mib'][hi] / mean['service_mib'][lo]:.2f}; "
              f"time {hi:,} / {lo:,}: {mean['seconds'][hi] / mean['seconds'][lo]:.1f}")


if __name__ == "__main__":
    main()
