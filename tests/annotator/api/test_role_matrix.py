"""Every endpoint x every role: anonymous 401, non-member 404 (the project is invisible), a member whose
role is too low 403, and a member with the role gets the documented success status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from annotator.models import Membership, ModelVersion, Role
from annotator.services.prompts import image_check, prompt_image_add
from tests.conftest import ROLES, png_bytes


@dataclass
class Case:
    name: str
    method: str
    url: str  # formatted with the context below
    min_role: str
    ok: int
    body: Any = None
    multipart: bool = False


def _import_body():
    return {"file": SimpleUploadedFile("p.jsonl", b'{"prompt": "What is 2 + 2?"}\n')}


CASES = [
    Case("project detail", "get", "/api/projects/{p}/", Role.VIEWER, 200),
    Case("project update", "patch", "/api/projects/{p}/", Role.OWNER, 200, {"guidelines": "Check every step."}),
    Case("project delete", "delete", "/api/projects/{p}/", Role.OWNER, 204),
    Case("member list", "get", "/api/projects/{p}/members/", Role.VIEWER, 200),
    Case("member add", "post", "/api/projects/{p}/members/", Role.OWNER, 201, {"username": "newbie", "role": "viewer"}),
    Case("member role change", "patch", "/api/projects/{p}/members/{m_viewer}/", Role.OWNER, 200,
         {"role": "supervisor"}),
    Case("member remove", "delete", "/api/projects/{p}/members/{m_viewer}/", Role.OWNER, 204),
    Case("prompt list", "get", "/api/projects/{p}/prompts/", Role.VIEWER, 200),
    Case("prompt create", "post", "/api/projects/{p}/prompts/", Role.OWNER, 201,
         {"messages": [{"role": "user", "content": "What is 3 + 4?"}], "category": "knowledge"}),
    Case("prompt detail", "get", "/api/projects/{p}/prompts/{prompt}/", Role.VIEWER, 200),
    Case("prompt update", "patch", "/api/projects/{p}/prompts/{prompt}/", Role.OWNER, 200, {"reference_answer": "7"}),
    Case("prompt delete", "delete", "/api/projects/{p}/prompts/{prompt}/", Role.OWNER, 204),
    Case("prompt image upload", "post", "/api/projects/{p}/prompts/{prompt}/images/", Role.OWNER, 201,
         lambda: {"file": SimpleUploadedFile("a.png", png_bytes())}, multipart=True),
    Case("prompt image file", "get", "/api/projects/{p}/prompts/{image_prompt}/images/0/", Role.VIEWER, 200),
    Case("prompt import", "post", "/api/projects/{p}/prompts/import/", Role.OWNER, 201, _import_body, multipart=True),
    Case("model list", "get", "/api/projects/{p}/models/", Role.VIEWER, 200),
    Case("model create", "post", "/api/projects/{p}/models/", Role.OWNER, 201,
         lambda: {"name": "sft-1", "base_model": str(settings.MODEL_STORE / "demo"), "backend": "local"}),
    Case("model detail", "get", "/api/projects/{p}/models/{model}/", Role.VIEWER, 200),
    Case("model update", "patch", "/api/projects/{p}/models/{model}/", Role.OWNER, 200, {"notes": "baseline"}),
    Case("trace list", "get", "/api/projects/{p}/traces/", Role.VIEWER, 200),
    Case("trace detail", "get", "/api/projects/{p}/traces/{t}/", Role.VIEWER, 200),
    Case("step list", "get", "/api/projects/{p}/traces/{t}/steps/", Role.VIEWER, 200),
    Case("step labels", "get", "/api/projects/{p}/traces/{t}/steps/1/label/", Role.VIEWER, 200),
    Case("step label set", "put", "/api/projects/{p}/traces/{t}/steps/1/label/", Role.SUPERVISOR, 200,
         {"rating": -1, "safety_tags": [], "note": "42 - 5 is 37, fine; but see step 3"}),
    Case("step label clear", "delete", "/api/projects/{p}/traces/{t}/steps/1/label/", Role.SUPERVISOR, 204),
    Case("review clear", "delete", "/api/projects/{p}/traces/{t}/reviews/", Role.SUPERVISOR, 204),
    Case("review list", "get", "/api/projects/{p}/traces/{t}/reviews/", Role.VIEWER, 200),
    Case("review set", "put", "/api/projects/{p}/traces/{t}/reviews/", Role.SUPERVISOR, 200,
         {"verdict": "reject", "knowledge_label": "false"}),
    Case("trace corrections", "get", "/api/projects/{p}/traces/{t}/corrections/", Role.VIEWER, 200),
    Case("correction create", "post", "/api/projects/{p}/traces/{t}/corrections/", Role.SUPERVISOR, 201,
         {"step_index": 2, "text": "3. 37 + 8 = 45", "expected_version": 1, "reason": "arithmetic slip"}),
    Case("correction list", "get", "/api/projects/{p}/corrections/", Role.VIEWER, 200),
    Case("audit log", "get", "/api/projects/{p}/audit/", Role.OWNER, 200),
    # the team (#13)
    Case("queue", "get", "/api/projects/{p}/queue/?mine=true&reviewed=false", Role.VIEWER, 200),
    Case("queue next", "get", "/api/projects/{p}/queue/next/", Role.VIEWER, 200),
    Case("queue counts", "get", "/api/projects/{p}/queue/counts/", Role.VIEWER, 200),
    Case("assignment list", "get", "/api/projects/{p}/assignments/", Role.VIEWER, 200),
    Case("assignment progress", "get", "/api/projects/{p}/assignments/progress/", Role.VIEWER, 200),
    Case("assign", "post", "/api/projects/{p}/assignments/", Role.OWNER, 201,
         {"annotators": ["supervisor", "reviewer"], "overlap": 2}),
    Case("assignment remove", "delete", "/api/projects/{p}/assignments/{assignment}/", Role.OWNER, 204),
    Case("agreement", "get", "/api/projects/{p}/agreement/", Role.VIEWER, 200),
    Case("controller", "get", "/api/projects/{p}/traces/{t}/controller/", Role.VIEWER, 200),
    Case("adjudicate trace", "put", "/api/projects/{p}/traces/{t}/adjudication/", Role.REVIEWER, 200,
         {"verdict": "reject", "knowledge_label": "false", "note": "step 3 adds wrongly"}),
    Case("adjudication clear", "delete", "/api/projects/{p}/traces/{adjudicated}/adjudication/", Role.REVIEWER, 204),
    Case("adjudicate correction", "post", "/api/projects/{p}/corrections/{correction}/adjudicate/", Role.REVIEWER,
         200, {"decision": "approve"}),
    Case("gold list", "get", "/api/projects/{p}/gold/", Role.REVIEWER, 200),
    Case("gold set", "put", "/api/projects/{p}/traces/{t}/gold/", Role.REVIEWER, 200,
         {"verdict": "reject", "step_ratings": {"2": -1}}),
    Case("gold clear", "delete", "/api/projects/{p}/traces/{gold}/gold/", Role.REVIEWER, 204),
    Case("webhook list", "get", "/api/projects/{p}/webhooks/", Role.OWNER, 200),
    Case("webhook create", "post", "/api/projects/{p}/webhooks/", Role.OWNER, 201,
         {"url": "http://127.0.0.1:9/hook", "events": ["trace.reviewed"]}),
    Case("webhook detail", "get", "/api/projects/{p}/webhooks/{webhook}/", Role.OWNER, 200),
    Case("webhook update", "patch", "/api/projects/{p}/webhooks/{webhook}/", Role.OWNER, 200, {"active": False}),
    Case("webhook delete", "delete", "/api/projects/{p}/webhooks/{webhook}/", Role.OWNER, 204),
    Case("webhook test", "post", "/api/projects/{p}/webhooks/{webhook}/test/", Role.OWNER, 202),
    Case("webhook deliveries", "get", "/api/projects/{p}/webhooks/{webhook}/deliveries/", Role.OWNER, 200),
    Case("webhook delivery retry", "post", "/api/projects/{p}/webhooks/{webhook}/deliveries/{delivery}/retry/",
         Role.OWNER, 202),
    Case("model lineage", "get", "/api/projects/{p}/models/{model}/lineage/", Role.VIEWER, 200),
]


@pytest.fixture
def ctx(project, prompt, trace, users):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="newbie", password="x-very-long-password")
    model = ModelVersion.objects.create(project=project, name="demo", base_model="/models/demo")
    image_prompt = prompt.__class__.objects.create(project=project, messages=[{"role": "user", "content": "Describe."}])
    prompt_image_add(prompt=image_prompt, actor=users["owner"], image=image_check(name="x.png", data=png_bytes()))
    from annotator.models import Assignment, WebhookDelivery
    from annotator.services.adjudication import adjudication_set, gold_set
    from annotator.services.corrections import correction_create
    from annotator.services.webhooks import webhook_create
    from tests.factories import make_trace

    other = make_trace(project, prompt, steps=["1. 2 + 2 = 4"], answer="4")
    adjudication_set(trace=other, actor=users["reviewer"], verdict="accept")
    gold_set(trace=other, actor=users["reviewer"], verdict="accept")
    correction = correction_create(trace=other, step_index=0, text="1. 2 + 2 = four", expected_version=1,
                                   author=users["supervisor"])
    hook = webhook_create(project=project, actor=users["owner"], url="http://127.0.0.1:9/hook")
    delivery = WebhookDelivery.objects.create(webhook=hook, message_id="msg_matrix", event_type="trace.reviewed",
                                              payload={}, status="failed")
    assignment = Assignment.objects.create(project=project, prompt=prompt, annotator=users["supervisor"])
    return {
        "p": project.pk,
        "prompt": prompt.pk,
        "image_prompt": image_prompt.pk,
        "t": trace.pk,
        "model": model.pk,
        "m_viewer": Membership.objects.get(project=project, user=users["viewer"]).pk,
        "adjudicated": other.pk,
        "gold": other.pk,
        "correction": correction.pk,
        "webhook": hook.pk,
        "delivery": delivery.pk,
        "assignment": assignment.pk,
    }


def _call(client, case: Case, ctx):
    url = case.url.format(**ctx)
    body = case.body() if callable(case.body) else case.body
    if case.multipart:
        return getattr(client, case.method)(url, body, format="multipart")
    return getattr(client, case.method)(url, body, format="json")


def _expected(case: Case, role: str) -> int:
    if role == "anonymous":
        return 401
    if role == "outsider":
        return 404
    if Role.rank(role) < Role.rank(case.min_role):
        return 403
    return case.ok


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_role_matrix(case, role, ctx, client_for):
    response = _call(client_for(role), case, ctx)
    expected = _expected(case, role)
    assert response.status_code == expected, (case.name, role, getattr(response, "data", None))
    if expected in (401, 403, 404):
        assert response.json()["code"] in {"not_authenticated", "not_found", "forbidden"}


def test_project_list_shows_only_member_projects(client_for, project, other_project):
    names = [p["name"] for p in client_for("viewer").get("/api/projects/").json()["results"]]
    assert names == ["Arithmetic safety"]
    mine = client_for("outsider").get("/api/projects/").json()["results"]
    assert [p["name"] for p in mine] == ["Someone else's"]
    assert mine[0]["my_role"] == "owner"
    assert client_for("anonymous").get("/api/projects/").status_code == 401


def test_any_user_can_create_a_project_and_owns_it(client_for, users):
    response = client_for("viewer").post("/api/projects/", {"name": "Mine"}, format="json")
    assert response.status_code == 201
    assert response.json()["my_role"] == "owner"
    assert Membership.objects.get(project_id=response.json()["id"], user=users["viewer"]).role == "owner"


def test_objects_of_another_project_are_not_found_through_mine(client_for, project, other_project, users):
    from tests.factories import make_prompt, make_trace

    foreign_prompt = make_prompt(other_project, actor=users["outsider"])
    foreign_trace = make_trace(other_project, foreign_prompt, steps=["1. a"], answer="a")
    owner = client_for("owner")
    assert owner.get(f"/api/projects/{project.pk}/prompts/{foreign_prompt.pk}/").status_code == 404
    assert owner.get(f"/api/projects/{project.pk}/traces/{foreign_trace.pk}/").status_code == 404
    response = owner.put(f"/api/projects/{project.pk}/traces/{foreign_trace.pk}/steps/0/label/", {"rating": 1},
                         format="json")
    assert response.status_code == 404
    assert not foreign_trace.steps.get().labels.exists()
