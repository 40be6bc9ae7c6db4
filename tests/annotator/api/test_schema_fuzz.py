"""A bounded schema fuzz (schemathesis) of every operation in the app's own OpenAPI schema, as the
project owner and as a viewer, each with a real API token: no operation answers 5xx, and every answer
is one the schema documents (status code, content type, body; a viewer's 403s included).
Deterministic: hypothesis is derandomized, with a small fixed number of examples per operation and
generation mode, so that the whole suite can afford it."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

EXAMPLES = {GenerationMode.POSITIVE: 4, GenerationMode.NEGATIVE: 2}
# A viewer is refused most writes before their input is read: fewer examples find what there is.
VIEWER_EXAMPLES = {GenerationMode.POSITIVE: 2, GenerationMode.NEGATIVE: 1}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Not skipped, only run last: each would turn every later request into a 404 (the prompt and its trace,
# or the project, are gone) or a 401 (the token is revoked), so that nothing after them reached a view.
LAST = ["DELETE /api/projects/{project_id}/prompts/{prompt_id}/", "DELETE /api/projects/{project_id}/",
        "POST /api/auth/logout/"]


def _token(username: str) -> str:
    response = Client().post("/api/auth/token/", {"username": username, "password": PASSWORD},
                             content_type="application/json")
    return response.json()["token"]


@pytest.fixture
def tokens(users, project) -> dict[str, str]:
    return {role: _token(role) for role in ("owner", "viewer")}


@pytest.fixture
def wsgi_app(tokens):
    """The WSGI app, inside the test's transaction: a real request would close the database connection
    at its start and end (and with it the transaction), so do what Django's test client does (which
    connects the handlers again after each of its own requests: no test client after this)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _ordered(schema):
    ops = [result.ok() for result in schema.get_all_operations()]
    return sorted(ops, key=lambda op: LAST.index(op.label) + 1 if op.label in LAST else 0)


def test_no_operation_answers_5xx_or_off_schema(tokens, wsgi_app, project, prompt, trace):
    _fuzz(wsgi_app, tokens["owner"], EXAMPLES, project, prompt, trace)


def test_no_operation_answers_a_viewer_5xx_or_off_schema(tokens, wsgi_app, project, prompt, trace):
    # The same run as a viewer (a member who may read, not act): every refusal is a documented 403.
    _fuzz(wsgi_app, tokens["viewer"], VIEWER_EXAMPLES, project, prompt, trace)


def _fuzz(wsgi_app, token: str, examples_per_mode, project, prompt, trace) -> None:
    headers = {"Authorization": f"Token {token}"}
    # The fuzzer's own ids would 404 almost every project operation: use the real project, trace and
    # prompt, so that bodies and queries reach the views. Other ids stay generated.
    real_ids = {"project_id": project.pk, "trace_id": trace.pk, "prompt_id": prompt.pk, "index": 0}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    ops = _ordered(schema)
    assert len(ops) > 60 and [op.label for op in ops[-len(LAST):]] == LAST

    failures: list[str] = []
    for op in ops:
        for mode, examples in examples_per_mode.items():

            @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                for name, value in real_ids.items():
                    if name in (case.path_parameters or {}):
                        case.path_parameters[name] = value
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation with nothing that can be made invalid (no parameters, no body) has no
                # negative cases; its positive ones ran.
                assert mode is GenerationMode.NEGATIVE, op.label
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, not only the first
                failures.append(f"{op.label} ({mode}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
