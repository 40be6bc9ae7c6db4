"""The Celery worker command line, written once: the dev launcher (`make run`), the tests' real
workers (tests/support/live.py) and the benchmarks build it here. compose.yaml spells the same three
workers out for production (YAML cannot import this); keep them in step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSpec:
    queues: str  # comma-separated queue names
    name: str  # the node name is "<name>@<host>"
    pool: str = "prefork"  # "threads" for I/O-bound work that shares one loaded model per process
    concurrency: int = 2
    prefetch: int | None = None  # None: the settings' CELERY_WORKER_PREFETCH_MULTIPLIER


# The studio's three workers (DESIGN.md "Processes"): datasets and policies; generation, in
# threads that share the loaded model; training, one run at a time and one prefetched.
STUDIO_WORKERS: dict[str, WorkerSpec] = {
    "worker-default": WorkerSpec(queues="default", name="default", concurrency=2),
    "worker-generate": WorkerSpec(queues="generate", name="generate", pool="threads", concurrency=8),
    "worker-train": WorkerSpec(queues="train", name="train", concurrency=1, prefetch=1),
}


def worker_command(spec: WorkerSpec, *, loglevel: str = "INFO") -> list[str]:
    """argv of a Celery worker of the studio's app for ``spec`` (gossip and mingle off: the workers
    never coordinate with each other, and both cost start-up time)."""
    command = [
        sys.executable, "-m", "celery", "-A", "webapp", "worker",
        "-Q", spec.queues, "-n", f"{spec.name}@%h", "--pool", spec.pool, "-c", str(spec.concurrency),
        "--without-gossip", "--without-mingle", "-l", loglevel,
    ]
    if spec.prefetch is not None:
        command += ["--prefetch-multiplier", str(spec.prefetch)]
    return command
