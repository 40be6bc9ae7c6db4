"""Request bodies on the real web server process (webapp.server, Daphne): memory before authentication,
oversize refusals, and no bare 400 for a malformed multipart body.

Memory is the server process's peak resident set (VmHWM in /proc/PID/status), read before and after
the request, so anything the request made the process hold at any moment counts.
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotator.models import Prompt
from tests.factories import make_project
from tests.support.live import web_server

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
PASSWORD = "a-long-enough-password-for-bodies"


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class _Multipart:
    """A multipart/form-data body read from a file on disk, so the client holds none of it in memory."""

    def __init__(self, tmp: Path, name: str, lines_bytes: int, line: bytes) -> None:
        self.boundary = uuid.uuid4().hex
        self.path = tmp / name
        head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jsonl\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        with open(self.path, "wb") as out:
            out.write(head)
            written = 0
            while written + len(line) <= lines_bytes:
                out.write(line)
                written += len(line)
            out.write(tail)
        self.size = self.path.stat().st_size

    def post(self, addr: str, url: str, headers: dict[str, str] | None = None, timeout: float = 300):
        host, port = addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        with open(self.path, "rb") as body:
            conn.request("POST", url, body=body, headers={
                "Content-Type": f"multipart/form-data; boundary={self.boundary}",
                "Content-Length": str(self.size), **(headers or {})})
            response = conn.getresponse()
            data = response.read()
        conn.close()
        return response, data


def _request(addr: str, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, url, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


@pytest.fixture
def server(transactional_db, tmp_path):
    with web_server(tmp_path, name="web-bodies") as (addr, proc):
        yield addr, proc


@pytest.fixture
def owner_token(server, settings):
    addr, _ = server
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # the server's hasher
    user = get_user_model().objects.create_user(username="bodies-owner", password=PASSWORD)
    project = make_project(owner=user, name="Bodies")
    response, data = _request(addr, "POST", "/api/auth/token/",
                              json.dumps({"username": "bodies-owner", "password": PASSWORD}).encode(),
                              {"Content-Type": "application/json"})
    assert response.status == 200, data
    return project, json.loads(data)["token"]


def test_anonymous_120_mib_upload_costs_the_server_under_32_mib(server, owner_token, tmp_path):
    addr, proc = server
    project, token = owner_token
    url = f"/api/projects/{project.pk}/prompts/import/"
    warm = _Multipart(tmp_path, "warm.bin", 1024, b'{"prompt": "What is 1 + 1?"}\n')
    response, _ = warm.post(addr, url, {"Authorization": f"Token {token}"})
    assert response.status == 201  # the import path is loaded and warm

    big = _Multipart(tmp_path, "big.bin", 120 * MIB, b'{"prompt": "' + b"x" * 4000 + b'"}\n')
    before = _peak_rss(proc.proc.pid)
    response, data = big.post(addr, url)
    grown = _peak_rss(proc.proc.pid) - before
    assert response.status == 413, data[:300]
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(data)["code"] == "too_large"
    print(f"anonymous 120 MiB upload: the server's peak memory grew by {grown / MIB:.0f} MiB")
    assert grown <= 32 * MIB, f"the server's peak memory grew by {grown / MIB:.0f} MiB"


def test_authenticated_50_mib_import_costs_the_server_less_than_its_body(server, owner_token, tmp_path):
    """The body reaches the import as it reads it, never whole in the web process: 51 MiB of growth
    for this 50 MiB upload before, 22 MiB after (the import's own working set, the same at 5 MiB)."""
    addr, proc = server
    project, token = owner_token
    url = f"/api/projects/{project.pk}/prompts/import/"
    auth = {"Authorization": f"Token {token}"}
    warm = _Multipart(tmp_path, "warm.bin", 64 * 1024, b'{"prompt": "' + b"w" * 4000 + b'"}\n')
    response, data = warm.post(addr, url, auth)
    assert response.status == 201
    warmed = json.loads(data)["imported"]

    line = b'{"prompt": "' + b"q" * 8000 + b'", "category": "knowledge"}\n'
    upload = _Multipart(tmp_path, "fifty.bin", 50 * MIB - 4096, line)
    before = _peak_rss(proc.proc.pid)
    response, data = upload.post(addr, url, auth)
    grown = _peak_rss(proc.proc.pid) - before
    assert response.status == 201, data[:300]
    imported = json.loads(data)["imported"]
    assert imported == (50 * MIB - 4096) // len(line)
    assert Prompt.objects.filter(project=project).count() == imported + warmed
    print(f"50 MiB import: the server's peak memory grew by {grown / MIB:.0f} MiB")
    assert grown <= 32 * MIB, f"the server's peak memory grew by {grown / MIB:.0f} MiB"


def test_oversize_by_content_length_is_refused_without_reading_the_body(server):
    """The body never arrives: the answer comes from the Content-Length header alone."""
    addr, _ = server
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/projects/1/prompts/import/")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(10 * 1024 * MIB))
    conn.endheaders()
    conn.send(b"--x\r\n")  # a few bytes of a claimed 10 GiB; the client then waits for the answer
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "too_large"
    conn.close()


@pytest.mark.parametrize("path", ["/api/projects/", "/accounts/login/", "/healthz/"])
def test_malformed_multipart_gets_a_real_answer_not_a_bare_400(server, owner_token, path):
    """Twisted used to answer a bare `400 Bad Request` (no headers, no body) to a multipart body it
    could not parse, whatever the path. Now Django answers: with headers, JSON under /api/."""
    addr, _ = server
    _project, token = owner_token
    body = b"--b\r\nthis is not a multipart part\r\n"
    response, data = _request(addr, "POST", path, body, {
        "Content-Type": "multipart/form-data; boundary=b", "Authorization": f"Token {token}"})
    assert response.getheader("Content-Type"), "a bare answer without headers"
    assert 400 <= response.status < 500
    if path.startswith("/api/"):
        assert response.status == 400 and json.loads(data)["code"] in ("parse_error", "invalid")


def test_the_server_module_is_what_every_launcher_runs():
    root = Path(__file__).resolve().parents[2]
    for name in ("webapp/devserver.py", "compose.yaml", "Dockerfile", "tests/support/live.py"):
        text = (root / name).read_text()
        assert "webapp.server" in text and '"daphne", "-b"' not in text, name
    assert os.path.exists(root / "webapp" / "server.py")
