"""`make run`: everything the studio needs on one machine, in the foreground.

Run under `python -m webapp.embedded exec --` so DATABASE_URL / REDIS_URL are set (embedded servers
when the user set none). Steps: migrate, make sure the demo admin exists (credentials printed), build
the demo model and seed the demo project on first start, then start Daphne and the Celery workers
(queues default, generate, train) and wait. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from webapp.workers import STUDIO_WORKERS, worker_command

ROOT = Path(__file__).resolve().parent.parent


def _say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def _admin_password(data_dir: Path) -> str:
    """The demo admin's password: generated once, kept in the (git-ignored) data folder."""
    path = data_dir / "admin-password.txt"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def ensure_admin(data_dir: Path):
    """The demo admin (a superuser), with the password kept in the data folder. Returns (user, password)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    password = _admin_password(data_dir)
    admin = User.objects.filter(username="admin").first()
    if admin is None:
        admin = User.objects.create_superuser("admin", "admin@localhost", password)
    elif not admin.check_password(password):
        admin.set_password(password)
        admin.save(update_fields=["password"])
    return admin, password


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    django.setup()
    from django.conf import settings

    from annotator.demo import ensure_demo

    admin, password = ensure_admin(settings.DATA_DIR)
    ensure_demo(admin)
    _say(f"demo admin: username 'admin', password '{password}' (kept in {settings.DATA_DIR / 'admin-password.txt'})")


def main() -> int:
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    _say("applying migrations")
    _manage("migrate", "--noinput", "-v", "0")
    _setup()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = {
        "web": [sys.executable, "-m", "webapp.server", "-b", host, "-p", port, "webapp.asgi:application"],
        **{name: worker_command(spec) for name, spec in STUDIO_WORKERS.items()},
    }
    procs: dict[str, subprocess.Popen] = {}
    for name, cmd in commands.items():
        worker_env = {**env, "OMP_NUM_THREADS": "1"} if name == "worker-generate" else env
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=worker_env)
    _say(f"SafeLadder Studio on http://{host}:{port}/  (API docs: /api/docs/, admin: /admin/). Ctrl-C stops it.")

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                _say(f"{name} exited with {proc.returncode}; stopping the rest")
                code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.3)
    _say("stopping")
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + 20
    for proc in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
