"""Training on more than one process: one stage under ``accelerate launch`` (no Django).

``train`` is what the train worker calls. With one process it is ``runner.run_stage`` in the
worker's own process. With more (``StageConfig.num_processes``; unset: one per GPU on a CUDA
machine), it writes the stage's config to ``output_dir/launch/spec.json`` and starts

    python -m accelerate.commands.launch --multi_gpu --num_processes N --num_machines 1
        --machine_rank 0 --main_process_port P --mixed_precision no --dynamo_backend no
        -m trainer_worker.training.launch output_dir/launch/spec.json

``--multi_gpu`` is the launcher that starts N processes (torchrun's); on a machine without CUDA the
stage's ``use_cpu=True`` makes every rank join over gloo (``--cpu`` would start one process only).
With an accelerate config file (``accelerate_config``: DeepSpeed, FSDP, several machines) the file
says the distributed type and only ``--num_processes`` is given beside it.

Every rank runs ``run_stage`` on the same config. How they talk to the worker, through files in
``output_dir/launch/`` (ranks on other machines, see README, need it on a shared filesystem):

* ``events.jsonl``: rank 0 alone appends its metrics and log lines; the worker tails the file and
  calls ``on_metrics`` / ``on_log``. Rank 0 alone saves the final model and tokenizer, and writes
  ``result.json``; the worker registers the model (once) from that.
* ``STOP``: the worker creates it when ``should_stop()`` says so; every rank checks it after each
  optimiser step and the ranks agree by an all-reduce (``runner._any_rank``), so they stop at the
  same step. A rank on the worker's machine also stops when the worker process is gone.
* ``rank-R.error``: a rank that raises writes its reason there; ``train`` then raises
  ``LaunchError`` naming the rank. A rank killed by a signal writes nothing: the launcher's own
  report (its output is kept in ``output.log``) names the rank and the signal. When one rank ends,
  the launcher ends the others, so none waits in a collective for ever.

The launcher is started in a session of its own, is sent SIGTERM if the worker dies (Linux's
parent-death signal) and is ended, with its ranks, when ``train`` leaves early.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer_worker.training.config import StageConfig, cuda_available
from trainer_worker.training.runner import StageResult, run_stage

LAUNCH_DIR = "launch"
SPEC = "spec.json"
EVENTS = "events.jsonl"
RESULT = "result.json"
STOP = "STOP"
OUTPUT = "output.log"
POLL_S = 0.2
STOP_GRACE_S = 15.0  # after SIGTERM, how long the launcher may take to end its ranks


class LaunchError(RuntimeError):
    """The processes of a launched stage failed; the message says which rank and why."""


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if cuda_available() else 0


def num_processes(config: StageConfig) -> int:
    """How many processes the stage trains on: its ``num_processes``, else one per GPU (1 on CPU)."""
    if config.num_processes is not None:
        return int(config.num_processes)
    return max(1, gpu_count())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(spec: Path, processes: int, port: int, *, accelerate_config: str | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs the stage of ``spec`` on ``processes``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        # The file sets the distributed type (multi-GPU, DeepSpeed, FSDP) and the machines.
        cmd += ["--config_file", str(accelerate_config), "--num_processes", str(processes)]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
                "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, "-m", __name__, str(spec)]


def launch_env(processes: int) -> dict[str, str]:
    """The launcher's environment: this one, this package importable from any working directory, and
    the CPU threads shared out between the ranks (unless OMP_NUM_THREADS is set)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to send the child SIGTERM when this process dies (the
    launcher then ends its ranks). libc is loaded here, before the fork: the child runs only the
    one foreign call between fork and exec, and takes no import lock another thread might hold."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Tail:
    """Complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line.strip()]


def _root_cause(output: str) -> tuple[int, int] | None:
    """(rank, exit code) of torchrun's "Root Cause (first observed failure)" report, if any."""
    if "Root Cause" not in output:
        return None
    root = output.split("Root Cause", 1)[1]
    rank = re.search(r"\brank\s*:\s*(\d+)", root)
    code = re.search(r"\bexitcode\s*:\s*(-?\d+)", root)
    return (int(rank.group(1)), int(code.group(1))) if rank and code else None


def _first_line(path: Path) -> str:
    return (path.read_text(errors="replace").strip().splitlines() or ["no reason given"])[0]


def _rank_failure(folder: Path, processes: int, returncode: int) -> str:
    """Why the launched processes failed, naming the rank that failed first. The launcher's report
    says which rank that was; a rank killed by a signal (the kernel's OOM killer, a kill) wrote no
    reason, and the others then fail in their next collective, so their reasons are not the cause."""
    output = (folder / OUTPUT).read_text(errors="replace") if (folder / OUTPUT).exists() else ""
    root = _root_cause(output)
    if root is not None:
        rank, code = root
        if code < 0 and -code in {s.value for s in signal.Signals}:
            return f"rank {rank} of {processes} was killed by {signal.Signals(-code).name}"
        if (folder / f"rank-{rank}.error").exists():
            return f"rank {rank} of {processes} failed: {_first_line(folder / f'rank-{rank}.error')}"
        return f"rank {rank} of {processes} exited with code {code}"
    errors = sorted(folder.glob("rank-*.error"), key=lambda p: p.stat().st_mtime)
    if errors:
        rank_name = errors[0].name.removeprefix("rank-").removesuffix(".error")
        return f"rank {rank_name} of {processes} failed: {_first_line(errors[0])}"
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-5:])
    return f"the {processes} training processes exited with code {returncode}: {tail or 'no output'}"


def _end(proc: subprocess.Popen) -> None:
    """End the launcher and its ranks (its own session): SIGTERM, then SIGKILL after a grace."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_stage_processes(
    config: StageConfig,
    processes: int,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    accelerate_config: str | None = None,
) -> StageResult:
    """``run_stage`` on ``processes`` processes under ``accelerate launch``; the same callbacks and
    result. Raises ``LaunchError`` when a rank fails (the others are ended with it)."""
    config.validate()
    if cuda_available() and not accelerate_config and processes > gpu_count():
        raise LaunchError(f"num_processes is {processes} but this machine has {gpu_count()} GPU(s)")
    folder = Path(config.output_dir) / LAUNCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("rank-*.error"), folder / EVENTS, folder / RESULT, folder / STOP]:
        stale.unlink(missing_ok=True)  # a resumed run starts its launch afresh
    spec = folder / SPEC
    spec.write_text(json.dumps({"config": config.to_dict(), "resume": resume, "parent_pid": os.getpid(),
                                "host": socket.gethostname()}))
    port = free_port()
    cmd = launch_command(spec, processes, port, accelerate_config=accelerate_config)
    if on_log is not None:
        on_log(f"Launching {processes} processes: accelerate launch {' '.join(cmd[3:-3])}")
    events = _Tail(folder / EVENTS)

    def forward() -> None:
        for line in events.lines():
            event = json.loads(line)
            if event["type"] == "metrics" and on_metrics is not None:
                on_metrics(int(event["step"]), event["values"])
            elif event["type"] == "log" and on_log is not None:
                on_log(event["line"])

    with open(folder / OUTPUT, "wb") as output:
        proc = subprocess.Popen(
            cmd, env=launch_env(processes), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_parent_death_signal(),
        )
        try:
            stopping = False
            while proc.poll() is None:
                forward()
                if not stopping and should_stop is not None and should_stop():
                    (folder / STOP).touch()
                    stopping = True
                time.sleep(POLL_S)
            forward()
        finally:
            _end(proc)
    if proc.returncode != 0:
        raise LaunchError(_rank_failure(folder, processes, proc.returncode))
    if not (folder / RESULT).exists():
        raise LaunchError(f"the {processes} training processes ended without a result (see {folder / OUTPUT})")
    data = json.loads((folder / RESULT).read_text())
    return StageResult(
        output_path=Path(data["output_path"]) if data["output_path"] else None,
        global_step=int(data["global_step"]), metrics=data["metrics"], cancelled=bool(data["cancelled"]),
        train_tokens=int(data["train_tokens"]), train_seconds=float(data["train_seconds"]),
    )


def train(
    config: StageConfig,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    accelerate_config: str | None = None,
) -> StageResult:
    """Train the stage on as many processes as it asks for (see the module doc)."""
    processes = num_processes(config)
    if processes == 1:
        return run_stage(config, on_metrics=on_metrics, on_log=on_log, should_stop=should_stop, resume=resume)
    return run_stage_processes(config, processes, on_metrics=on_metrics, on_log=on_log, should_stop=should_stop,
                               resume=resume, accelerate_config=accelerate_config)


# --- inside each rank -----------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rank_main(spec_path: Path) -> None:
    """One rank: ``run_stage`` on the spec's config; rank 0 reports and writes the result."""
    folder = spec_path.parent
    rank = int(os.environ.get("RANK", "0"))
    try:
        spec = json.loads(spec_path.read_text())
        config = StageConfig.from_dict(spec["config"])
        # The worker's pid means something on its own machine only (the ranks of other machines,
        # started by hand for a multi-node run, see README, do not watch it).
        parent = int(spec["parent_pid"]) if spec.get("host") == socket.gethostname() else None
        main = rank == 0
        events = open(folder / EVENTS, "a", encoding="utf-8") if main else None  # noqa: SIM115

        def emit(**event: Any) -> None:
            if events is not None:
                events.write(json.dumps(event) + "\n")
                events.flush()

        def should_stop() -> bool:
            if parent is not None and not _pid_alive(parent):
                raise LaunchError(f"the train worker (pid {parent}) that launched this run is gone")
            return (folder / STOP).exists()

        def on_log(line: str) -> None:
            emit(type="log", line=line)

        def on_metrics(step: int, values: dict[str, float]) -> None:
            emit(type="metrics", step=step, values=values)

        result = run_stage(config, on_metrics=on_metrics, on_log=on_log, should_stop=should_stop,
                           resume=bool(spec["resume"]))
        if main:
            _log_backend(on_log)
            (folder / (RESULT + ".tmp")).write_text(json.dumps({
                "output_path": str(result.output_path) if result.output_path else None,
                "global_step": result.global_step, "metrics": result.metrics, "cancelled": result.cancelled,
                "train_tokens": result.train_tokens, "train_seconds": result.train_seconds,
            }))
            os.replace(folder / (RESULT + ".tmp"), folder / RESULT)  # whole or absent
            events.close()
        _leave_together()
    except BaseException as exc:
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            (folder / f"rank-{rank}.error").write_text(
                f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
            )
        raise


def _leave_together() -> None:
    """The ranks leave the process group together: a barrier, then its orderly end. Without it a
    rank still tearing down its gloo connections when another has exited could abort (SIGABRT),
    and the launcher then failed a run that had ended well (seen on cancel, about 1 in 13)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _log_backend(on_log: Callable[[str], None]) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        on_log(f"Trained on {dist.get_world_size()} processes ({dist.get_backend()} backend)")


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
