"""The harness the seeded studio benchmarks share (`loop.py`, `triage.py`): find or build the demo
model, start the embedded services, migrate, and run one child process per seed, ``jobs`` at a time.

Each child is the same script called with ``--child-seed S --child-demo DIR --child-out FILE`` and
the forwarded arguments; it writes its result as JSON to FILE. A failing child stops the others.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def demo_dir(explicit: Path | None) -> Path:
    """``explicit`` if given, else the demo model `make run` built, else one built here (minutes)."""
    from trainer_worker.training.demo_model import MAX_STEPS, REPORT_FILE, build_demo_model
    from trainer_worker.training.demo_task import TASK_VERSION

    if explicit:
        return explicit
    made = ROOT / ".data" / "models" / f"demo-task{TASK_VERSION}"  # what `make run` builds
    if (made / REPORT_FILE).exists():
        return made
    own = Path(os.environ["SAFELADDER_DATA_DIR"]) / "models" / f"demo-task{TASK_VERSION}"
    if not (own / REPORT_FILE).exists():
        _log(f"building the demo model at {own} ({MAX_STEPS} steps; `make run` would have built it)")
        build_demo_model(own, max_steps=MAX_STEPS, seed=0)
    return own


def run_seeds(script: str, seeds: list[int], explicit_demo: Path | None, out: Path, forwarded: list[str],
              jobs: int) -> tuple[Path, dict[int, dict[str, Any]]]:
    """Run ``script``'s children for ``seeds`` inside the embedded services; returns the demo model
    folder and each seed's result."""
    from webapp.embedded import services

    with services() as env:
        os.environ.update(env)
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], check=True, cwd=ROOT)
        demo = demo_dir(explicit_demo)
        # The demo model may lie outside the bench's model store (`make run` built it): allow its folder.
        roots = [r for r in os.environ.get("SAFELADDER_MODEL_ROOTS", "").split(",") if r]
        os.environ["SAFELADDER_MODEL_ROOTS"] = ",".join([*roots, str(demo.resolve().parent)])
        procs: dict[int, subprocess.Popen] = {}
        results: dict[int, dict[str, Any]] = {}
        pending = list(seeds)

        def stop(*_: Any) -> None:
            for p in procs.values():
                p.terminate()
            raise SystemExit(1)

        signal.signal(signal.SIGTERM, stop)
        while pending or procs:
            while pending and len(procs) < max(1, jobs):
                seed = pending.pop(0)
                procs[seed] = subprocess.Popen(
                    [sys.executable, script, "--child-seed", str(seed), "--child-demo", str(demo),
                     "--child-out", str(out / f"seed{seed}.json"), *forwarded], cwd=ROOT)
            time.sleep(1)
            for seed, proc in list(procs.items()):
                if proc.poll() is not None:
                    del procs[seed]
                    if proc.returncode != 0:
                        for p in procs.values():
                            p.terminate()
                        raise SystemExit(f"seed {seed} failed (exit {proc.returncode})")
                    results[seed] = json.loads((out / f"seed{seed}.json").read_text())
    return demo, results
