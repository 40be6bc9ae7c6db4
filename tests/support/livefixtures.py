"""Fixtures for tests that need the live stack: a real Daphne, a real Celery `generate` worker,
Redis, and small real models. Registered for the whole suite from tests/conftest.py; tests that use
them need `transactional_db` (the worker and Daphne see committed rows only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from annotator.models import Membership, ModelVersion, Role
from tests.support.live import daphne_server, start_worker, test_database_url
from tests.support.models import build_scripted_lm


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory):
    return build_scripted_lm(tmp_path_factory.mktemp("models") / "scripted")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    from trainer_worker.training.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "vlm")


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker, worker_tmp):
    """(daphne address, generate worker) for the whole session."""
    from annotator import flags
    from tests.support.live import purge_queues

    purge_queues()
    flags.forget_all()
    worker = start_worker(worker_tmp, queues="generate", name="generate", pool="threads", concurrency=4)
    with daphne_server(worker_tmp) as addr:
        yield addr, worker
    worker.stop()


@dataclass
class Live:
    addr: str
    project: Any
    model: Any
    prompt: Any
    users: dict[str, Any]
    cookies: dict[str, str] = field(default_factory=dict)

    def url(self, trace_id: int, last_seq: int | None = None) -> str:
        query = f"?last_seq={last_seq}" if last_seq is not None else ""
        return f"ws://{self.addr}/ws/traces/{trace_id}/{query}"

    def headers(self, user: str | None) -> dict[str, str]:
        headers = {"Origin": f"http://{self.addr}"}
        if user:
            headers["Cookie"] = f"sessionid={self.cookies[user]}"
        return headers


@pytest.fixture
def live(transactional_db, live_stack, scripted_model):
    addr, _worker = live_stack
    return live_env(addr, scripted_model)


def live_env(addr: str, scripted_model: Any) -> Live:
    """Users in each role, a project serving the scripted model, a prompt, and a session cookie per
    user, for a web server at ``addr`` (the rows must be committed: use ``transactional_db``)."""
    from annotator.services.projects import project_create
    from annotator.services.prompts import prompt_create

    User = get_user_model()
    users = {
        n: User.objects.create_user(username=n, password="pw-long-enough-123")
        for n in ["owner", "supervisor", "viewer", "outsider"]
    }
    project = project_create(
        owner=users["owner"], name="Live", generation_defaults={"temperature": 0, "max_new_tokens": 120}
    )
    Membership.objects.create(project=project, user=users["supervisor"], role=Role.SUPERVISOR)
    Membership.objects.create(project=project, user=users["viewer"], role=Role.VIEWER)
    model = ModelVersion.objects.create(
        project=project, name="scripted", base_model=str(scripted_model), path=str(scripted_model)
    )
    project.serving_model = model
    project.save(update_fields=["serving_model"])
    prompt = prompt_create(
        project=project,
        actor=users["owner"],
        messages=[{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}],
        category="knowledge",
        reference="45",
    )
    env = Live(addr, project, model, prompt, users)
    for name, user in users.items():
        client = Client()
        client.force_login(user)
        env.cookies[name] = client.cookies["sessionid"].value
    return env


@pytest.fixture
def db_role():
    """(name, DATABASE_URL): a login role of the test database with the rights the studio's own
    user has, for a worker that connects as it; a test then takes rights away (or connections) to
    make that worker's database refuse it."""
    name = f"worker_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{name}" LOGIN')
        cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
        cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{name}"')
    scheme, rest = test_database_url().split("://", 1)
    yield name, f"{scheme}://{name}@{rest.split('@', 1)[1]}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
        cursor.execute(f'DROP OWNED BY "{name}"')
        cursor.execute(f'DROP ROLE "{name}"')
