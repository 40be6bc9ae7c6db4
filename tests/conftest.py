"""Shared fixtures: users in every role, a project, and API clients authenticated as each of them."""

from __future__ import annotations

import io
import os

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from annotator.models import Membership, Role
from tests.factories import make_project, make_prompt, make_trace

pytest_plugins = ["tests.support.livefixtures"]

PASSWORD = "correct-horse-battery-staple"

ROLES = ["anonymous", "outsider", "viewer", "supervisor", "reviewer", "owner"]


@pytest.fixture
def users(db):
    from annotator.auth import forget_login_failures

    forget_login_failures()  # counts live in Redis, which outlives each test's database rollback
    User = get_user_model()
    return {
        name: User.objects.create_user(username=name, password=PASSWORD)
        for name in ["owner", "reviewer", "supervisor", "viewer", "outsider"]
    }


@pytest.fixture
def project(users):
    project = make_project(owner=users["owner"], name="Arithmetic safety")
    Membership.objects.create(project=project, user=users["supervisor"], role=Role.SUPERVISOR)
    Membership.objects.create(project=project, user=users["reviewer"], role=Role.REVIEWER)
    Membership.objects.create(project=project, user=users["viewer"], role=Role.VIEWER)
    return project


@pytest.fixture
def other_project(users):
    """A project none of the `project` members belong to, except its own owner (outsider)."""
    return make_project(owner=users["outsider"], name="Someone else's")


@pytest.fixture
def client_for(users):
    def build(role: str) -> APIClient:
        client = APIClient()
        if role != "anonymous":
            client.force_authenticate(users[role])
        return client

    return build


@pytest.fixture
def prompt(project, users):
    return make_prompt(project, actor=users["owner"])


@pytest.fixture
def trace(project, prompt):
    return make_trace(project, prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 44"], answer="44")


def png_bytes(size: tuple[int, int] = (8, 8), color: str = "red", fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2's deliberate slowness costs ~0.3 s a user on these cores; the tests make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _outbound_allowances(tmp_path_factory):
    """Tests build their models under pytest's temporary folder and serve the vLLM stand-in on
    127.0.0.1 at a free port: allow both, here and in the worker and web processes the tests start
    (tests/support/live.py passes the environment on). What is refused is tested with the defaults."""
    from django.conf import settings

    root = str(tmp_path_factory.getbasetemp())
    settings.MODEL_ROOTS = [*settings.MODEL_ROOTS, root]
    settings.BACKEND_URL_ALLOWLIST = [*settings.BACKEND_URL_ALLOWLIST, "http://127.0.0.1:*"]
    os.environ["SAFELADDER_MODEL_ROOTS"] = ",".join(settings.MODEL_ROOTS)
    os.environ["SAFELADDER_BACKEND_URLS"] = ",".join(settings.BACKEND_URL_ALLOWLIST)
    # Webhook receivers in tests are local HTTP servers; retries wait a fraction of a second.
    settings.WEBHOOK_URL_ALLOWLIST = ["http://127.0.0.1:*"]
    settings.WEBHOOK_BACKOFF_S = [0.3, 0.6]
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    os.environ["SAFELADDER_WEBHOOK_URLS"] = "http://127.0.0.1:*"
    os.environ["SAFELADDER_WEBHOOK_BACKOFF_S"] = "0.3,0.6"
    os.environ["SAFELADDER_WEBHOOK_MAX_ATTEMPTS"] = "3"


@pytest.fixture(scope="session")
def worker_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="session")
def default_worker(django_db_setup, django_db_blocker, worker_tmp):
    """A real Celery worker process on queue `default`, against the test database."""
    from tests.support.live import purge_queues, start_worker

    purge_queues()
    proc = start_worker(worker_tmp, queues="default", name="default", pool="threads", concurrency=2)
    yield proc
    proc.stop()
