"""Outbound requests chosen by users: backend URLs must be on the allow-list and model paths under the
model store (or a configured root), when a model version is saved and again before it is used; the
errors say what was refused without echoing what a remote server answered."""

from __future__ import annotations

import asyncio
import os

import pytest
from django.conf import settings as django_settings

from annotator.models import ModelVersion, Trace
from tests.annotator.live.conftest import Socket, finished
from tests.support.fake_vllm import FakeVLLM

URL = "/api/projects/{p}/models/"


@pytest.fixture
def defaults(settings):
    """The server's default allowances: VLLM_BASE_URL and the model store only."""
    settings.BACKEND_URL_ALLOWLIST = [settings.VLLM_BASE_URL]
    settings.MODEL_ROOTS = []
    return settings


def _create(client, project, **fields):
    return client.post(URL.format(p=project.pk), {"name": "m", "base_model": "served", **fields}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:6379/anything",  # a local service beside the studio
    "http://169.254.169.254/latest/meta-data/",  # a cloud metadata address
    "file:///etc/passwd",
    "http://user:pw@127.0.0.1:8001/",  # the allowed origin, with credentials smuggled in
    "http://127.0.0.1:8001.evil.example/",
])
def test_backend_url_off_the_allow_list_is_refused_on_create(client_for, project, defaults, base_url):
    response = _create(client_for("owner"), project, backend="vllm", backend_options={"base_url": base_url})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "not_allowed"
    assert not ModelVersion.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_allowed_backend_url_and_the_update_check(client_for, project, defaults):
    owner = client_for("owner")
    ok = _create(owner, project, backend="vllm", backend_options={"base_url": defaults.VLLM_BASE_URL + "/v1"})
    assert ok.status_code == 201, ok.json()
    version = ok.json()["id"]
    patch = owner.patch(f"{URL.format(p=project.pk)}{version}/",
                        {"backend_options": {"base_url": "http://10.0.0.1:8001"}}, format="json")
    assert patch.status_code == 400 and patch.json()["code"] == "not_allowed"
    assert ModelVersion.objects.get(pk=version).backend_options["base_url"] == defaults.VLLM_BASE_URL + "/v1"


@pytest.mark.django_db
def test_local_paths_must_lie_under_the_model_store(client_for, project, defaults, tmp_path):
    owner = client_for("owner")
    for fields in ({"base_model": "/etc"}, {"base_model": "relative/model"}, {"path": "/etc", "base_model": "x"},
                   {"adapter_path": "/root/.ssh", "backend": "vllm"},
                   {"base_model": str(defaults.MODEL_STORE / ".." / "escape")}):
        response = _create(owner, project, **{"backend": "local", **fields})
        assert response.status_code == 400, (fields, response.json())
        body = response.json()
        assert body["code"] == "not_allowed"
        assert "/etc" not in body["detail"] and "ssh" not in body["detail"]  # no file-system probing
    # A symbolic link inside the store that points outside it is outside.
    store = defaults.MODEL_STORE
    store.mkdir(parents=True, exist_ok=True)
    link = store / f"link-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc")
    try:
        assert _create(owner, project, base_model=str(link)).status_code == 400
    finally:
        link.unlink()
    assert _create(owner, project, base_model=str(store / "demo")).status_code == 201
    defaults.MODEL_ROOTS = [str(tmp_path)]
    assert _create(owner, project, name="m2", base_model=str(tmp_path / "ckpt")).status_code == 201


@pytest.mark.slow
def test_checked_again_before_use_and_no_remote_body_is_relayed(live):
    """Rows that bypass the service (or settings that changed) are refused by the generate worker:
    it never contacts the server. And an allowed server's error body stays out of what users see."""
    with FakeVLLM(error_status=500, error_message="SECRET-REMOTE-BODY internal path /srv/x") as fake:
        port = fake.base_url.rsplit(":", 1)[1]
        # The worker allows 127.0.0.1 at any port (tests/conftest.py), but not `localhost`.
        refused = ModelVersion.objects.create(project=live.project, name="refused", base_model="m", backend="vllm",
                                              backend_options={"base_url": f"http://localhost:{port}"})
        outside = ModelVersion.objects.create(project=live.project, name="outside", base_model="/etc",
                                              path="/etc")
        failing = ModelVersion.objects.create(project=live.project, name="failing", base_model="m", backend="vllm",
                                              backend_options={"base_url": fake.base_url})

        async def run(model):
            trace = await asyncio.to_thread(Trace.objects.create, project=live.project, prompt=live.prompt,
                                            model_version=model, sampling_params={"max_new_tokens": 8})
            ws = await Socket.open(live, trace.pk, user="supervisor")
            await ws.recv()  # the snapshot
            assert (await ws.act(action="start"))["type"] == "ack"
            status = await ws.until(finished)
            await ws.close()
            return trace.pk, status

        for model, expected in ((refused, "allow-list"), (outside, "outside the model store")):
            trace_id, status = asyncio.run(run(model))
            assert status["status"] == "failed" and expected in status["error"], status
        assert fake.requests == []  # nothing reached the server

        trace_id, status = asyncio.run(run(failing))
        assert status["status"] == "failed"
        assert status["error"] == "vLLM answered 500"
        detail = Trace.objects.get(pk=trace_id)
        assert detail.error == "vLLM answered 500"
        assert len(fake.requests) == 1
    assert django_settings.VLLM_BASE_URL  # the default allow-list entry exists
