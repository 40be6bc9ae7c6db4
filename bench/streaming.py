"""Streaming benchmark: token latency through the live stack vs reading the backend in-process.

Run it against real Daphne, a real Celery generate worker and Redis on loopback (both started here):

    .venv/bin/python -m webapp.embedded exec -- .venv/bin/python bench/streaming.py --traces 20 --viewers 5
    .venv/bin/python bench/streaming.py --traces 20,200 --viewers 5,1 --relay thread,asyncio --repeats 3

The backend is tests/support/fake_vllm.py, a local server speaking vLLM's OpenAI-compatible SSE wire
format (vLLM needs CUDA and cannot run here), paced to a fixed token rate so that the figures measure
the studio, not a model. Latency of a token = arrival at a websocket client - the moment the generate
worker's backend yielded it (carried in token events when SAFELADDER_TRACE_TIMING=1). The baseline
reads the same backend in-process in the same run, with the same concurrency. ``--relay`` compares
the generate worker's relays in the same run (GENERATE_RELAY: a thread per trace, or all of a
worker's vLLM streams on one event loop), alternating their runs; ``--fanout`` the web process's
fan-outs (TRACE_FANOUT: one Redis subscription per process handing each event to its viewers, or the
channel layer's per-viewer queues), each on a web server of its own, alternating too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds of each group of processes (and their children): where a run's
    CPU went, on a machine whose cores all the processes share."""
    import psutil

    out = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)] if name != "clients" else [proc]:
                t = p.cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


def mean_std(values: list[float]) -> str:
    import statistics

    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "nan"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", default="20", help="traces at once; a comma list pairs with --viewers")
    parser.add_argument("--viewers", default="5", help="viewers per trace; a comma list pairs with --traces")
    parser.add_argument("--relay", default="thread,asyncio",
                        help="generate worker relays to compare in this run (GENERATE_RELAY): thread, asyncio")
    parser.add_argument("--fanout", default="process",
                        help="web process fan-outs to compare in this run (TRACE_FANOUT): process, layer")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="processes the websocket clients are spread over (each has its own event loop)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (traces, viewers, relay, fanout)")
    parser.add_argument("--thread-max", type=int, default=60,
                        help="skip the thread relay above this many traces: it holds a database connection per "
                             "trace, and PostgreSQL's default max_connections is 100")
    parser.add_argument("--steps", type=int, default=40, help="steps per trace")
    parser.add_argument("--tokens", type=int, default=256,
                        help="max_new_tokens per trace (a trace ends at its steps' end or there)")
    parser.add_argument("--workers", type=int, default=1, help="generate worker processes per relay")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens per trace")
    parser.add_argument("--compare-scoring", action="store_true",
                        help="run twice in the same run, without and with live step scoring (the rule checker)")
    args = parser.parse_args()
    trace_counts = [int(x) for x in args.traces.split(",")]
    viewer_counts = [int(x) for x in args.viewers.split(",")]
    if len(viewer_counts) == 1:
        viewer_counts *= len(trace_counts)
    if len(viewer_counts) != len(trace_counts):
        parser.error("--traces and --viewers need the same number of entries (or one --viewers)")
    relays = args.relay.split(",")
    if not set(relays) <= {"thread", "asyncio"}:
        parser.error("--relay takes thread and/or asyncio")
    fanouts = args.fanout.split(",")
    if not set(fanouts) <= {"process", "layer"}:
        parser.error("--fanout takes process and/or layer")
    # A variant is (relay, fanout); its label names only what this run compares.
    variants = [(relay, fanout) for relay in relays for fanout in fanouts]

    def label(relay: str, fanout: str) -> str:
        parts = ([relay] if len(relays) > 1 or len(fanouts) == 1 else []) + ([fanout] if len(fanouts) > 1 else [])
        return "+".join(parts)

    configs = list(zip(trace_counts, viewer_counts, strict=True))

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from annotator.models import Membership, ModelVersion, Prompt, Role, Trace
    from annotator.services.projects import project_create
    from tests.support.live import Proc, process_env, web_server

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

    def new_traces(n: int) -> list:
        return [Trace.objects.create(project=project, prompt=prompt, model_version=model,
                                     sampling_params={"seed": 1, "max_new_tokens": args.tokens}) for _ in range(n)]

    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value

    # The stand-in listens on a free loopback port: allow it, as an administrator would allow vLLM's URL.
    env = process_env(SAFELADDER_TRACE_TIMING="1", SAFELADDER_BACKEND_URLS=fake.base_url)
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    from webapp.workers import WorkerSpec, worker_command

    # Each relay gets its own worker(s) on its own queue, all started up front, so the runs of the
    # two relays can alternate in one run. The thread relay needs a pool thread per trace; the hub
    # relays any number with the studio's usual few pool threads.
    workers, queues = [], {}
    for relay in relays:
        queues[relay] = f"bench-{relay}-{stamp}"
        thread_traces = max([n for n in trace_counts if n <= args.thread_max] or [1])
        per_worker = -(-thread_traces // args.workers) + 1 if relay == "thread" else 4
        for i in range(args.workers):
            workers.append(Proc(
                worker_command(WorkerSpec(queues=queues[relay], name=f"bench{stamp}-{relay}-{i}", pool="threads",
                                          concurrency=per_worker, prefetch=1), loglevel="WARNING"),
                tmp / f"worker-{relay}-{i}.log", {**env, "GENERATE_RELAY": relay}))
    results: dict[tuple[int, int, str], list[dict]] = {}
    try:
        time.sleep(8)
        from tests.support import live as live_mod

        live_mod.process_env = lambda **extra: {**env, **extra}
        with contextlib.ExitStack() as servers:
            # One web server per fan-out, all started up front, so that their runs alternate too.
            webs = {fanout: servers.enter_context(web_server(tmp, name=f"daphne-{fanout}", TRACE_FANOUT=fanout))
                    for fanout in fanouts}
            addr, web = webs[fanouts[-1]]
            for traces_n, viewers in configs:
                for rep in range(args.repeats):
                    for relay, fanout in variants:
                        if relay == "thread" and traces_n > args.thread_max:
                            continue
                        addr, web = webs[fanout]
                        print(f"{traces_n} traces x {viewers} viewers, relay {relay}, fan-out {fanout}, "
                              f"run {rep + 1} ...", flush=True)
                        pids = {"worker": [w.proc.pid for w in workers if f"-{relay}-" in w.log_path.name],
                                "web": [web.proc.pid], "vLLM stand-in": [fake.proc.pid], "clients": [os.getpid()]}
                        out = asyncio.run(run_clients(addr, cookie, new_traces(traces_n), viewers, queues[relay],
                                                      args.client_procs, pids))
                        results.setdefault((traces_n, viewers, label(relay, fanout)), []).append(out)
                        lat = out["latencies"]
                        print("   worker yield -> publish p50/p99 "
                              f"{pct(out['publish'], 0.5) * 1000:.1f}/{pct(out['publish'], 0.99) * 1000:.1f} ms, "
                              "publish -> websocket arrival p50/p99 "
                              f"{pct(out['deliver'], 0.5) * 1000:.1f}/{pct(out['deliver'], 0.99) * 1000:.1f} ms",
                              flush=True)
                        print("   CPU ms per token arrival (streaming, connects left out): " + ", ".join(
                            f"{k} {out['cpu'][k] * 1000 / max(1, len(lat)):.3f}" for k in pids), flush=True)
                        print(f"   p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, "
                              f"{len(lat)} token arrivals, {out['wall_s']:.1f} s, statuses "
                              f"{sorted(set(out['statuses']))}", flush=True)
                        time.sleep(1)
            if args.compare_scoring:
                traces_n, viewers = configs[0]
                results_plain = asyncio.run(run_clients(addr, cookie, new_traces(traces_n), viewers,
                                                        queues[relays[-1]]))
                project.supervision = {"mode": "live", "scorers": ["rule:demo_task"], "pause_below": None}
                project.save(update_fields=["supervision"])
                print("again, with live step scoring ...", flush=True)
                scored = asyncio.run(run_clients(addr, cookie, new_traces(traces_n), viewers, queues[relays[-1]]))
                from annotator.models import StepScore

                n_scores = StepScore.objects.filter(trace__project=project).count()
        print("baseline: reading the backend in-process ...", flush=True)
        bases = {n: baseline(fake.base_url, n) for n, _v in configs}
    finally:
        for worker in workers:
            worker.stop()
        fake.stop()
        project.delete()
        user.delete()

    print()
    print(f"{args.steps} steps per trace, 1 token / {args.token_delay * 1000:.0f} ms per trace (vLLM SSE stand-in), "
          f"{args.workers} generate worker process(es) per relay, {args.repeats} run(s) each; "
          f"added latency = websocket arrival - worker yield, minus the in-process baseline")
    print(f"{'traces x viewers':<18}{'variant':<16}{'p50 added ms':>18}{'p99 added ms':>18}{'msg/s':>18}"
          f"{'wall s':>14}  statuses")
    summary: dict[tuple[int, int, str], float] = {}
    labels = list(dict.fromkeys(label(relay, fanout) for relay, fanout in variants))
    for traces_n, viewers in configs:
        base = bases[traces_n]
        for name in labels:
            runs = results.get((traces_n, viewers, name))
            if not runs:
                print(f"{f'{traces_n} x {viewers}':<18}{name:<16}  not run (more traces than --thread-max)")
                continue
            p50s = [pct(r["latencies"], 0.5) * 1000 - base["p50_ms"] for r in runs]
            p99s = [pct(r["latencies"], 0.99) * 1000 - base["p99_ms"] for r in runs]
            rates = [r["messages"] / r["wall_s"] for r in runs]
            walls = [r["wall_s"] for r in runs]
            summary[(traces_n, viewers, name)] = sum(p99s) / len(p99s)
            statuses = sorted({s for r in runs for s in r["statuses"]})
            print(f"{f'{traces_n} x {viewers}':<18}{name:<16}{mean_std(p50s):>18}{mean_std(p99s):>18}"
                  f"{mean_std(rates):>18}{mean_std(walls):>14}  {statuses}")
        first = labels[0]
        for name in labels[1:]:  # every variant against the first one, in the same run
            if (traces_n, viewers, first) in summary and (traces_n, viewers, name) in summary:
                ratio = summary[(traces_n, viewers, name)] / summary[(traces_n, viewers, first)]
                print(f"{'':<18}p99 ratio {name} / {first}: {ratio:.2f}")
    for traces_n, viewers in configs:
        for name in labels:
            if (traces_n, viewers, name) not in summary:
                continue
            p99 = summary[(traces_n, viewers, name)]
            goal = 30 if viewers > 1 else 50
            print(f"target {traces_n} x {viewers}, {name}: p99 added {p99:.1f} ms (< {goal} ms): "
                  f"{'OK' if p99 < goal else 'MISSED'}")
    if args.compare_scoring:
        lat, s_lat = results_plain["latencies"], scored["latencies"]
        tps, s_tps = len(lat) / results_plain["wall_s"], len(s_lat) / scored["wall_s"]
        d99 = (pct(s_lat, 0.99) - pct(lat, 0.99)) * 1000
        print(f"{'websocket, scored':<28}{pct(s_lat, 0.5) * 1000:>10.1f}{pct(s_lat, 0.99) * 1000:>10.1f}"
              f"{len(s_lat):>10}{scored['wall_s']:>9.1f}   ({n_scores} step scores stored)")
        print(f"live scoring: delivered tokens/s ratio scored/unscored {s_tps / tps:.2f} (target >= 0.8), "
              f"p99 {d99:+.1f} ms vs unscored (target within 10 ms): "
              f"{'OK' if s_tps / tps >= 0.8 and d99 <= 10 else 'MISSED'}")
    return 0


async def run_clients(addr: str, cookie: str, traces: list, viewers: int, queue: str, procs: int = 1,
                      pids: dict[str, list[int]] | None = None) -> dict:
    """Open every viewer's socket (in ``procs`` client processes, as browsers each have their own),
    then start the traces, and gather what the viewers received. ``cpu`` is the CPU seconds of each of
    ``pids``' processes from the start of the streams (the sockets' connects left out) to their end."""
    import multiprocessing

    from asgiref.sync import sync_to_async

    from annotator.tasks import generate_trace

    urls = [f"ws://{addr}/ws/traces/{trace.pk}/" for trace in traces for _ in range(viewers)]
    headers = {"Origin": f"http://{addr}", "Cookie": f"sessionid={cookie}"}
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    children = [ctx.Process(target=client_process, args=(urls[i::procs], headers, results), daemon=True)
                for i in range(min(procs, len(urls)))]
    for child in children:
        child.start()
    for _ in children:  # every socket open and past its snapshot
        message = await asyncio.to_thread(results.get, True, 120)
        if message != "ready":
            raise RuntimeError(f"a client process failed: {message}")
    cpu0 = cpu_seconds(pids or {})
    started = time.monotonic()
    for trace in traces:
        await sync_to_async(generate_trace.apply_async)(kwargs={"trace_id": trace.pk}, queue=queue)
    outs = [await asyncio.to_thread(results.get, True, 600) for _ in children]
    wall = time.monotonic() - started
    cpu1 = cpu_seconds(pids or {})
    for child in children:
        child.join(10)
    if any(isinstance(o, str) for o in outs):
        raise RuntimeError(f"a client process failed: {outs}")
    return {"latencies": [x for o in outs for x in o["latencies"]], "messages": sum(o["messages"] for o in outs),
            "wall_s": wall, "publish": [x for o in outs for x in o["publish"]],
            "deliver": [x for o in outs for x in o["deliver"]], "statuses": [s for o in outs for s in o["statuses"]],
            "cpu": {k: cpu1[k] - cpu0[k] + (sum(o["cpu_s"] for o in outs) if k == "clients" else 0) for k in cpu0}}


def client_process(urls: list[str], headers: dict[str, str], results: Any) -> None:
    """One client process: its share of the viewers' sockets on one event loop."""

    async def main() -> dict:
        outs, tasks, counter = [], [], [0]
        for url in urls:
            out = {"latencies": [], "status": None}
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(url, headers, out, ready, counter)))
            outs.append(out)
            await asyncio.wait_for(ready.wait(), 30)
        results.put("ready")
        cpu0 = sum(os.times()[:2])
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        return {"latencies": [x for o in outs for x in o["latencies"]], "messages": counter[0],
                "publish": [x for o in outs for x in o.get("publish", [])],
                "deliver": [x for o in outs for x in o.get("deliver", [])],
                "statuses": [o["status"] for o in outs], "cpu_s": sum(os.times()[:2]) - cpu0}

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-fake":
        serve_fake(sys.argv[2])
    sys.exit(main())
