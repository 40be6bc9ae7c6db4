"""The OpenAPI schema generates cleanly; production settings pass `check --deploy`; embedded servers run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_openapi_schema_has_no_warnings_and_lists_every_endpoint(tmp_path):
    out = tmp_path / "schema.yml"
    result = _manage("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    schema = out.read_text()
    from django.urls import get_resolver

    api_routes = [str(p.pattern) for p in get_resolver().url_patterns if str(p.pattern) == "api/"]
    assert api_routes  # the API is mounted
    for path in ["/api/projects/", "/api/projects/{project_id}/prompts/import/",
                 "/api/projects/{project_id}/traces/{trace_id}/corrections/", "/api/projects/{project_id}/audit/",
                 "/api/auth/token/"]:
        assert f"  {path}:" in schema, path


def test_production_settings_pass_check_deploy():
    env = {"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": "k" * 64 + "-Zq8#x",
           "DJANGO_ALLOWED_HOSTS": "studio.example.org"}
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_secret_key():
    result = _manage("check", env={"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": ""})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_docs_and_login_pages_are_served(client):
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower() and b"/static/drf_spectacular_sidecar/" in docs.content
    assert b"<script>" not in docs.content  # the split view: its start-up script is a file (CSP)
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content


@pytest.mark.slow
def test_embedded_servers_start_keep_data_and_stop(tmp_path):
    """The fresh-machine default: a real PostgreSQL and Valkey under the data folder; data survives a restart."""
    script = (
        "import os, psycopg, redis;"
        "db = psycopg.connect(os.environ['DATABASE_URL'], autocommit=True);"
        "db.execute('CREATE TABLE IF NOT EXISTS t (v int)'); db.execute('INSERT INTO t VALUES (1)');"
        "print('rows', db.execute('SELECT count(*) FROM t').fetchone()[0]);"
        "print('ping', redis.Redis.from_url(os.environ['REDIS_URL']).ping())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["SAFELADDER_DATA_DIR"] = str(tmp_path / "data")
    runs = [
        subprocess.run([sys.executable, "-m", "webapp.embedded", "exec", "--", sys.executable, "-c", script],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "rows 1" in runs[0].stdout and "ping True" in runs[0].stdout
    assert "rows 2" in runs[1].stdout  # the first run's row survived the restart
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
