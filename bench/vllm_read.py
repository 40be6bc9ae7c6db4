"""Reading vLLM streams on one event loop: the relay hub's client (``VLLMBackend.astream``, aiohttp)
against the httpx reader it replaced, in the same run.

    .venv/bin/python bench/vllm_read.py --streams 200 --repeats 3

The server is tests/support/fake_vllm.py in a process of its own (vLLM needs CUDA and cannot run
here), paced like bench/streaming.py (one token every ``--token-delay`` seconds per stream, 4
characters each), so each network read carries about one event, as a relay of live traces sees
them. ``--streams`` streams are read at once on one event loop, as the generate worker's relay hub
reads its traces. Measured: this process's CPU seconds per event (user + system; the server's CPU
is its own process's), and the spread of the events' arrival against their pace (p99 lag).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def read_httpx(base_url: str, request, streams: int) -> int:
    """The relay hub's reader before aiohttp: an httpx AsyncClient, ``aiter_lines``, the same SSE
    line parser (``_StreamReader``)."""
    import httpx

    from annotator.generation.vllm import VLLMBackend, _StreamReader

    backend = VLLMBackend(base_url, "demo")
    body = backend.request_body(request)

    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60.0, connect=5.0),
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)) as client:
        async def one() -> int:
            reader, n = _StreamReader(), 0
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    n += len(reader.line(line))
                    if reader.done:
                        break
            return n + sum(1 for _ in reader.end())

        return sum(await asyncio.gather(*[one() for _ in range(streams)]))


async def read_aiohttp(base_url: str, request, streams: int) -> int:
    from annotator.generation.vllm import VLLMBackend

    backend = VLLMBackend(base_url, "demo")
    try:
        async def one() -> int:
            return sum([1 async for _delta in backend.astream(request, should_stop=lambda: False)])

        return sum(await asyncio.gather(*[one() for _ in range(streams)]))
    finally:
        await backend.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="streams read at once on one loop")
    parser.add_argument("--tokens", type=int, default=150, help="tokens per stream")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens per stream")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    from annotator.generation.backends import GenerationRequest, SamplingParams

    completion = "abcd" * args.tokens
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "streaming.py"), "--serve-fake",
         json.dumps({"completion": completion, "delay_s": args.token_delay})],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    base_url = server.stdout.readline().strip()
    request = GenerationRequest(messages=[{"role": "user", "content": "go"}],
                                params=SamplingParams(max_new_tokens=args.tokens + 10))
    readers = {"httpx (before)": read_httpx, "aiohttp (now)": read_aiohttp}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in readers}
    try:
        for read in readers.values():  # a warm-up of each: imports, first connections
            asyncio.run(read(base_url, request, 2))
        for rep in range(args.repeats):
            for name, read in readers.items():
                cpu0, wall0 = cpu_s(), time.monotonic()
                events = asyncio.run(read(base_url, request, args.streams))
                cpu, wall = cpu_s() - cpu0, time.monotonic() - wall0
                ideal = args.tokens * args.token_delay
                results[name].append((cpu / events * 1e6, wall - ideal))
                print(f"run {rep + 1} {name:15s} {events} deltas, {cpu / events * 1e6:.1f} µs CPU / delta, "
                      f"wall {wall:.2f} s (paced: {ideal:.2f} s)", flush=True)
    finally:
        server.terminate()
        server.wait(10)

    def ms(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    print(f"\n{args.streams} streams x {args.tokens} tokens, 1 token / {args.token_delay * 1000:.0f} ms each, "
          f"{args.repeats} runs, one event loop")
    print("| reader | µs CPU / delta | wall over the pace (s) |")
    print("| --- | --- | --- |")
    for name, rows in results.items():
        print(f"| {name} | {ms([r[0] for r in rows])} | {ms([r[1] for r in rows])} |")
    before, now = (statistics.mean(r[0] for r in rows) for rows in results.values())
    print(f"\nCPU per delta, aiohttp / httpx: {now / before:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
