"""Streaming benchmark: token latency through the live stack vs reading the backend in-process.

Run it against real Daphne, a real Celery generate worker and Redis on loopback (both started here):

    .venv/bin/python -m webapp.embedded exec -- .venv/bin/python bench/streaming.py --traces 20 --viewers 5

The backend is tests/support/fake_vllm.py, a local server speaking vLLM's OpenAI-compatible SSE wire
format (vLLM needs CUDA and cannot run here), paced to a fixed token rate so that the figures measure
the studio, not a model. Latency of a token = arrival at a websocket client - the moment the generate
worker's backend yielded it (carried in token events when SAFELADDER_TRACE_TIMING=1). The baseline
reads the same backend in-process in the same run, with the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


class FakeServerProcess:
    def __init__(self, completion: str, delay: float) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake", json.dumps({"completion": completion, "delay_s": delay})],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        self.base_url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def serve_fake(options: str) -> None:
    from tests.support.fake_vllm import FakeVLLM

    opts = json.loads(options)
    fake = FakeVLLM(completion=opts["completion"], chunk_size=4, delay_s=opts["delay_s"]).start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def completion_text(steps: int) -> str:
    from trainer_worker.vocabulary.format import render_completion

    return render_completion([f"{i}. {i * 7} + {i} = {i * 8}" for i in range(1, steps + 1)], "done")


def baseline(fake_url: str, traces: int) -> dict[str, float]:
    """The same backend read directly in this process, `traces` streams at once."""
    from annotator.generation.backends import GenerationRequest, SamplingParams
    from annotator.generation.vllm import VLLMBackend

    latencies: list[float] = []
    lock = threading.Lock()
    tokens = [0]

    def one() -> None:
        backend = VLLMBackend(fake_url, "demo")
        request = GenerationRequest(messages=[{"role": "user", "content": "go"}], params=SamplingParams(seed=1))
        stream = backend.stream(request, should_stop=lambda: False)
        while True:
            yielded = time.time()
            try:
                delta = next(stream)
            except StopIteration:
                break
            arrived = time.time()
            if delta.text:
                with lock:
                    # next() returns when the backend yields: this is yield-to-consumer time.
                    latencies.append(max(0.0, arrived - max(yielded, arrived)))
                    tokens[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(traces)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    return {"p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000, "tokens": tokens[0],
            "wall_s": wall}


async def watch(url: str, headers: dict[str, str], out: dict, ready: asyncio.Event, counter: list[int]) -> None:
    import websockets

    async with websockets.connect(url, additional_headers=headers, max_size=2**22) as ws:
        await ws.recv()  # snapshot
        ready.set()
        while True:
            raw = await ws.recv()
            arrived = time.time()
            counter[0] += 1
            event = json.loads(raw)
            if event.get("type") == "trace.token":
                out["latencies"].extend(arrived - t for t in event.get("yield_ts", []))
                if "pub_ts" in event:
                    out.setdefault("publish", []).extend(event["pub_ts"] - t for t in event["yield_ts"])
                    out.setdefault("deliver", []).append(arrived - event["pub_ts"])
            elif event.get("type") == "trace.status" and event["status"] in ("finished", "stopped", "failed"):
                out["status"] = event["status"]
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per trace")
    parser.add_argument("--workers", type=int, default=1, help="generate worker processes")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens per trace")
    parser.add_argument("--compare-scoring", action="store_true",
                        help="run twice in the same run, without and with live step scoring (the rule checker)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from annotator.models import Membership, ModelVersion, Prompt, Role, Trace
    from annotator.services.projects import project_create
    from tests.support.live import Proc, daphne_server, process_env

    call_command("migrate", verbosity=0)
    os.environ["SAFELADDER_TRACE_TIMING"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    # The stand-in server runs in its own process, as vLLM would: in this one its threads would
    # compete for the GIL with the websocket clients and distort their arrival times.
    fake = FakeServerProcess(completion_text(args.steps), args.token_delay)
    User = get_user_model()
    stamp = int(time.time())
    user = User.objects.create_user(username=f"bench-{stamp}", password="bench-password-1234")
    project = project_create(owner=user, name=f"bench streaming {stamp}")
    Membership.objects.filter(project=project, user=user).update(role=Role.OWNER)
    model = ModelVersion.objects.create(project=project, name="fake-vllm", base_model="demo", backend="vllm",
                                        backend_options={"base_url": fake.base_url})
    # One of the demo task's prompts, so that the rule checker scores every step when scoring is on.
    prompt = Prompt.objects.create(project=project, messages=[{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}])

    def new_traces() -> list:
        return [Trace.objects.create(project=project, prompt=prompt, model_version=model,
                                     sampling_params={"seed": 1}) for _ in range(args.traces)]

    traces = new_traces()
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value

    # The stand-in listens on a free loopback port: allow it, as an administrator would allow vLLM's URL.
    env = process_env(SAFELADDER_TRACE_TIMING="1", SAFELADDER_BACKEND_URLS=fake.base_url)
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    # Generation threads of one process share its GIL; --workers spreads the traces over processes.
    per_worker = -(-args.traces // args.workers) + 1
    from webapp.workers import WorkerSpec, worker_command

    workers = [
        Proc(worker_command(WorkerSpec(queues="generate", name=f"bench{stamp}-{i}", pool="threads",
                                       concurrency=per_worker, prefetch=1), loglevel="WARNING"),
             tmp / f"worker{i}.log", env)
        for i in range(args.workers)
    ]
    try:
        time.sleep(6)
        from tests.support import live as live_mod

        live_mod.process_env = lambda **extra: {**env, **extra}
        with daphne_server(tmp) as addr:
            results = asyncio.run(run_clients(addr, cookie, traces, args.viewers))
            if args.compare_scoring:
                project.supervision = {"mode": "live", "scorers": ["rule:demo_task"], "pause_below": None}
                project.save(update_fields=["supervision"])
                print("again, with live step scoring ...", flush=True)
                scored = asyncio.run(run_clients(addr, cookie, new_traces(), args.viewers))
                from annotator.models import StepScore

                n_scores = StepScore.objects.filter(trace__project=project).count()
        print("baseline: reading the backend in-process ...", flush=True)
        base = baseline(fake.base_url, args.traces)
    finally:
        for worker in workers:
            worker.stop()
        fake.stop()
        project.delete()
        user.delete()

    lat = results["latencies"]
    for part in ("publish", "deliver"):
        vals = results.get(part, [])
        print(f"  {part}: p50 {pct(vals, 0.5) * 1000:.1f} ms, p99 {pct(vals, 0.99) * 1000:.1f} ms")
    print()
    print(f"{args.traces} traces x {args.viewers} viewers, {args.workers} generate worker process(es), "
          f"{args.steps} steps each, "
          f"1 token / {args.token_delay * 1000:.0f} ms per trace (vLLM SSE stand-in)")
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}{'tokens':>10}{'wall s':>9}")
    print(f"{'websocket (via worker)':<28}{pct(lat, 0.5) * 1000:>10.1f}{pct(lat, 0.99) * 1000:>10.1f}"
          f"{len(lat):>10}{results['wall_s']:>9.1f}")
    print(f"{'in-process baseline':<28}{base['p50_ms']:>10.1f}{base['p99_ms']:>10.1f}{base['tokens']:>10}"
          f"{base['wall_s']:>9.1f}")
    added_p99 = pct(lat, 0.99) * 1000 - base["p99_ms"]
    print(f"added latency p50 {pct(lat, 0.5) * 1000 - base['p50_ms']:.1f} ms, p99 {added_p99:.1f} ms "
          f"(target p99 < 30 ms): {'OK' if added_p99 < 30 else 'MISSED'}")
    print(f"websocket messages delivered: {results['messages']} in {results['wall_s']:.1f}s = "
          f"{results['messages'] / results['wall_s']:.0f} msg/s; wall-time ratio websocket/in-process "
          f"{results['wall_s'] / base['wall_s']:.2f}; statuses {sorted(set(results['statuses']))}")
    if args.compare_scoring:
        s_lat = scored["latencies"]
        tps, s_tps = len(lat) / results["wall_s"], len(s_lat) / scored["wall_s"]
        d99 = (pct(s_lat, 0.99) - pct(lat, 0.99)) * 1000
        print(f"{'websocket, scored':<28}{pct(s_lat, 0.5) * 1000:>10.1f}{pct(s_lat, 0.99) * 1000:>10.1f}"
              f"{len(s_lat):>10}{scored['wall_s']:>9.1f}   ({n_scores} step scores stored)")
        print(f"live scoring: delivered tokens/s ratio scored/unscored {s_tps / tps:.2f} (target >= 0.8), "
              f"p99 {d99:+.1f} ms vs unscored (target within 10 ms): "
              f"{'OK' if s_tps / tps >= 0.8 and d99 <= 10 else 'MISSED'}")
    return 0


async def run_clients(addr: str, cookie: str, traces: list, viewers: int) -> dict:
    from asgiref.sync import sync_to_async

    from annotator.tasks import generate_trace

    headers = {"Origin": f"http://{addr}", "Cookie": f"sessionid={cookie}"}
    outs, tasks, counter = [], [], [0]
    for trace in traces:
        for _ in range(viewers):
            out = {"latencies": [], "status": None}
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(f"ws://{addr}/ws/traces/{trace.pk}/", headers, out, ready,
                                                   counter)))
            outs.append(out)
            await asyncio.wait_for(ready.wait(), 30)
    started = time.monotonic()
    for trace in traces:
        await sync_to_async(generate_trace.delay)(trace_id=trace.pk)
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    wall = time.monotonic() - started
    return {"latencies": [x for o in outs for x in o["latencies"]], "messages": counter[0], "wall_s": wall,
            "publish": [x for o in outs for x in o.get("publish", [])],
            "deliver": [x for o in outs for x in o.get("deliver", [])],
            "statuses": [o["status"] for o in outs]}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-fake":
        serve_fake(sys.argv[2])
    sys.exit(main())
