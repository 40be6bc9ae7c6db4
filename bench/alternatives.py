"""Alternatives benchmark: time from asking for K alternatives to K scored candidates on screen.

Through the live stack (real Daphne, a real Celery generate worker, PostgreSQL, Redis), with the demo
model on the local backend and the demo task's rule checker scoring each candidate:

    .venv/bin/python -m webapp.embedded exec -- .venv/bin/python bench/alternatives.py --requests 20 --seeds 3

A request = a websocket client sends ``{"action": "alternatives", "step_index": i, "k": K}`` on a
trace of a held-out demo prompt (its reference chain as the steps); the time runs until the client
receives the ``trace.alternatives`` event whose set is ``ready`` (every candidate sampled and
scored): what a supervisor waits for. Compared in the same run with (a) K = 1 through the same
stack, and (b) the in-process floor: the same ``sample_steps`` + scoring called directly on the same
model, K = 4, so the figures separate the model's own work from the studio's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def demo_dir(given: Path | None) -> Path:
    from trainer_worker.training.demo_model import REPORT_FILE, build_demo_model
    from trainer_worker.training.demo_task import TASK_VERSION

    if given:
        return given
    made = ROOT / ".data" / "models" / f"demo-task{TASK_VERSION}"  # what `make run` builds
    if (made / REPORT_FILE).exists():
        return made
    own = Path(os.environ.get("SAFELADDER_DATA_DIR", tempfile.gettempdir())) / "models" / f"demo-task{TASK_VERSION}"
    if not (own / REPORT_FILE).exists():
        print(f"building the demo model at {own} (`make run` would have built it) ...", flush=True)
        build_demo_model(own)
    return own


async def ask(addr: str, cookie: str, trace_id: int, step_index: int, k: int, seed: int) -> float:
    import websockets

    url = f"ws://{addr}/ws/traces/{trace_id}/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": f"http://{addr}"}
    async with websockets.connect(url, additional_headers=headers, max_size=2**22) as ws:
        await ws.recv()  # the snapshot
        started = time.perf_counter()
        await ws.send(json.dumps({"action": "alternatives", "step_index": step_index, "k": k, "seed": seed,
                                  "request_id": 1}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if event.get("type") == "error":
                raise RuntimeError(event)
            if event.get("type") == "trace.alternatives" and event["set"]["status"] in ("ready", "failed"):
                if event["set"]["status"] == "failed":
                    raise RuntimeError(event["set"]["error"])
                assert len(event["set"]["candidates"]) == k
                return time.perf_counter() - started


def floor(model_path: str, jobs: list[tuple[list[dict], list[str], int]], k: int) -> list[float]:
    """The same sampling and scoring, called in this process: no queue, no worker, no socket."""
    import torch

    from annotator.generation.backends import GenerationRequest, SamplingParams
    from annotator.generation.local import LocalBackend
    from annotator.supervision import Scorers
    from trainer_worker.vocabulary.format import render_prefix

    torch.set_num_threads(1)  # as the worker runs (OMP_NUM_THREADS=1): the same model work, compared fairly
    backend = LocalBackend(model_path, device="cpu")
    out = []
    for messages, prefix, seed in jobs:
        started = time.perf_counter()
        request = GenerationRequest(messages=messages, prefix=render_prefix(prefix),
                                    params=SamplingParams(temperature=1.0, max_new_tokens=96, seed=seed))
        samples = backend.sample_steps(request, n=k, rule="line", prefix_steps=prefix)
        scorers = Scorers(("rule:demo_task",), messages)
        for s in samples:
            if s.next.kind == "step":
                scorers.score([*prefix, s.next.text])
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per configuration and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--demo-model", type=Path, default=None)
    args = parser.parse_args()

    path = demo_dir(args.demo_model)
    # The demo model may lie outside this run's model store (`make run` builds it under .data/).
    os.environ.setdefault("SAFELADDER_MODEL_ROOTS", str(path.parent))
    import django

    django.setup()
    import random

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from annotator.models import Membership, ModelVersion, Prompt, Role, Step, Trace, TraceStatus
    from annotator.services.projects import project_create
    from tests.support.live import Proc, daphne_server, process_env
    from trainer_worker.training.demo_task import make_problems
    from webapp.workers import WorkerSpec, worker_command

    call_command("migrate", verbosity=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-alternatives-"))
    stamp = int(time.time())
    user = get_user_model().objects.create_user(username=f"bench-{stamp}", password="bench-password-1234")
    project = project_create(owner=user, name=f"bench alternatives {stamp}")
    Membership.objects.filter(project=project, user=user).update(role=Role.OWNER)
    model = ModelVersion.objects.create(project=project, name="demo", base_model=str(path), path=str(path))
    project.serving_model = model
    project.supervision = {"mode": "live", "scorers": ["rule:demo_task"], "pause_below": None}
    project.save(update_fields=["serving_model", "supervision"])
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    env = process_env()
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    worker = Proc(worker_command(WorkerSpec(queues="generate", name=f"benchalt{stamp}", pool="threads",
                                            concurrency=2, prefetch=1), loglevel="WARNING"), tmp / "worker.log", env)
    per_seed: list[dict[str, list[float]]] = []
    try:
        time.sleep(6)
        from tests.support import live as live_mod

        live_mod.process_env = lambda **extra: {**env, **extra}  # Daphne uses this run's database too
        with daphne_server(tmp) as addr:
            for seed in range(args.seeds):
                rng = random.Random(seed)
                drawn = make_problems(4 * args.requests, seed=seed, split="heldout")
                problems = [p for p in drawn if len(p.steps) >= 2]
                jobs = []
                for problem in problems[: args.requests]:
                    messages = [{"role": "user", "content": problem.prompt}]
                    prompt = Prompt.objects.create(project=project, messages=messages)
                    trace = Trace.objects.create(project=project, prompt=prompt, model_version=model,
                                                 status=TraceStatus.FINISHED, final_answer=problem.answer)
                    Step.objects.bulk_create([Step(trace=trace, index=i, text=t) for i, t in enumerate(problem.steps)])
                    index = rng.randrange(len(problem.steps))
                    jobs.append((trace.pk, messages, problem.steps[:index], index, rng.randrange(2**31)))
                # Warm-up: the worker loads the model on its first request.
                asyncio.run(ask(addr, cookie, jobs[0][0], jobs[0][3], 1, 0))
                times: dict[str, list[float]] = {f"K={args.k}": [], "K=1": []}
                for trace_id, _, _, index, s in jobs:  # interleaved, so that drift hits both alike
                    times[f"K={args.k}"].append(asyncio.run(ask(addr, cookie, trace_id, index, args.k, s)))
                    times["K=1"].append(asyncio.run(ask(addr, cookie, trace_id, index, 1, s)))
                inproc = [(m, p, s) for _, m, p, _, s in jobs]
                floor(str(path), inproc[:1], args.k)  # warm-up: this process loads the model once
                times[f"in-process K={args.k}"] = floor(str(path), inproc, args.k)
                per_seed.append(times)
                shown = [f"{name} p50 {pct(v, 0.5) * 1000:.0f} ms p95 {pct(v, 0.95) * 1000:.0f} ms"
                         for name, v in times.items()]
                print(f"seed {seed}: " + ", ".join(shown), flush=True)
    finally:
        worker.stop()
        project.delete()
        user.delete()

    def std(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def mean_std(values: list[float]) -> str:
        return f"{statistics.mean(values):.0f} ± {std(values):.0f}"

    print()
    print(f"time to {args.k} scored candidates on screen, demo model (local backend, CPU), rule checker scoring, "
          f"{args.requests} requests x {args.seeds} seeds")
    print(f"{'path':<26}{'p50 ms':>16}{'p95 ms':>16}")
    for name in per_seed[0]:
        p50s = [pct(t[name], 0.5) * 1000 for t in per_seed]
        p95s = [pct(t[name], 0.95) * 1000 for t in per_seed]
        print(f"{name:<26}{mean_std(p50s):>16}{mean_std(p95s):>16}")
    k_name = f"K={args.k}"
    batch = [pct(t[k_name], 0.5) / pct(t["K=1"], 0.5) for t in per_seed]
    studio = [pct(t[k_name], 0.5) - pct(t[f"in-process K={args.k}"], 0.5) for t in per_seed]
    print(f"K={args.k} / K=1 (p50): {statistics.mean(batch):.2f} ± {std(batch):.2f} "
          f"({args.k} candidates in one batched call cost this much more than one)")
    print(f"added by the studio (queue, worker, database, socket) at p50: "
          f"{statistics.mean(studio) * 1000:.0f} ± {std(studio) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
