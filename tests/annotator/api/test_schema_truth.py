"""The OpenAPI schema says what the API answers: fields present, arrays where arrays are answered,
nullable where null comes back, blank enums where "" comes back, and the error answers documented."""

from __future__ import annotations

import pytest
from django.test import Client

from annotator.models import AuditEvent, TraceReview

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema():
    return Client().get("/api/schema/?format=json").json()


def test_trace_detail_has_step_count_and_error(client_for, project, trace, schema):
    required = schema["components"]["schemas"]["TraceDetail"]["required"]
    assert {"step_count", "error"} <= set(required)
    body = client_for("viewer").get(f"/api/projects/{project.pk}/traces/{trace.pk}/").json()
    assert body["step_count"] == 3 and body["error"] == ""


@pytest.mark.parametrize("path", ["traces/{trace_id}/reviews/", "traces/{trace_id}/corrections/",
                                  "traces/{trace_id}/steps/{index}/label/"])
def test_trace_sublists_are_plain_arrays_in_schema_and_answer(client_for, project, trace, schema, path):
    op = schema["paths"][f"/api/projects/{{project_id}}/{path}"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    url = f"/api/projects/{project.pk}/" + path.format(trace_id=trace.pk, index=0)
    assert isinstance(client_for("viewer").get(url).json(), list)


def test_system_audit_actor_is_null_and_nullable(client_for, project, schema):
    AuditEvent.objects.create(project=project, actor=None, action="system.test", target_type="project")
    assert schema["components"]["schemas"]["AuditEvent"]["properties"]["actor"]["nullable"] is True
    rows = client_for("owner").get(f"/api/projects/{project.pk}/audit/").json()["results"]
    assert any(r["actor"] is None for r in rows)


def test_review_label_enums_allow_blank(client_for, project, trace, users, schema):
    TraceReview.objects.create(trace=trace, annotator=users["supervisor"], verdict="accept")
    prop = schema["components"]["schemas"]["TraceReview"]["properties"]["safety_label"]
    refs = [part["$ref"].rsplit("/", 1)[1] for part in prop["oneOf"]]
    assert "" in schema["components"]["schemas"][refs[1]]["enum"]
    review = client_for("viewer").get(f"/api/projects/{project.pk}/traces/{trace.pk}/reviews/").json()[0]
    assert review["safety_label"] == ""


def test_every_operation_documents_its_errors(schema):
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            if path == "/api/auth/token/":
                assert {"400", "429"} <= codes
                continue
            assert {"401", "403"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method in ("post", "put", "patch"):
                assert {"400", "413"} <= codes, (method, path)


@pytest.mark.parametrize("path", ["adjudication", "gold"])
def test_clearing_what_is_not_there_is_a_documented_409(client_for, project, trace, schema, path):
    """Found by tests/annotator/api/test_schema_fuzz.py: the 409 was answered but not in the schema."""
    op = schema["paths"][f"/api/projects/{{project_id}}/traces/{{trace_id}}/{path}/"]["delete"]
    assert "409" in op["responses"]
    response = client_for("owner").delete(f"/api/projects/{project.pk}/traces/{trace.pk}/{path}/")
    assert response.status_code == 409 and response.json()["code"] == "bad_state"


def test_no_controller_is_a_json_null(client_for, project, trace):
    """Found by the schema fuzz: nobody in control answered an empty body with no content type."""
    response = client_for("viewer").get(f"/api/projects/{project.pk}/traces/{trace.pk}/controller/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() is None
