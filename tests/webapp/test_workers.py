"""The studio's worker command line is built in one place (webapp/workers.py); compose.yaml, which
cannot import it, runs the same three workers with the same queues, pools and prefetch."""

from __future__ import annotations

from pathlib import Path

import yaml

from webapp.workers import STUDIO_WORKERS, worker_command

ROOT = Path(__file__).resolve().parents[2]


def _option(argv: list[str], flag: str, default: str | None = None) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else default


def test_the_train_worker_takes_one_run_at_a_time_and_prefetches_one():
    argv = worker_command(STUDIO_WORKERS["worker-train"])
    assert argv[1:6] == ["-m", "celery", "-A", "webapp", "worker"]
    assert (_option(argv, "-Q"), _option(argv, "-c"), _option(argv, "--prefetch-multiplier")) == ("train", "1", "1")
    assert _option(argv, "-n") == "train@%h"


def test_compose_runs_the_same_workers():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, spec in STUDIO_WORKERS.items():
        command = services[name]["command"]
        ours = worker_command(spec)
        for flag, default in (("-Q", None), ("--pool", "prefork"), ("--prefetch-multiplier", None)):
            assert _option(command, flag, default) == _option(ours, flag, default), (name, flag)
