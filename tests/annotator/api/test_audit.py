"""Every write through the API leaves exactly one audit event naming who did what."""

from __future__ import annotations

import pytest

from annotator.models import AuditEvent

pytestmark = pytest.mark.django_db


WRITES = [
    ("patch", "/api/projects/{p}/", {"guidelines": "New rules"}, "project.updated"),
    ("post", "/api/projects/{p}/members/", {"username": "outsider", "role": "viewer"}, "membership.added"),
    ("post", "/api/projects/{p}/prompts/", {"messages": [{"role": "user", "content": "Hi"}]}, "prompt.created"),
    ("patch", "/api/projects/{p}/prompts/{prompt}/", {"category": "safety"}, "prompt.updated"),
    ("delete", "/api/projects/{p}/prompts/{prompt}/", None, "prompt.deleted"),
    ("post", "/api/projects/{p}/models/", {"name": "m1", "base_model": "m", "backend": "vllm"},
     "model_version.created"),
    ("put", "/api/projects/{p}/traces/{t}/steps/0/label/", {"rating": 1}, "step_label.set"),
    ("put", "/api/projects/{p}/traces/{t}/reviews/", {"verdict": "accept"}, "trace_review.set"),
    ("post", "/api/projects/{p}/traces/{t}/corrections/", {"step_index": 0, "text": "1. fixed", "expected_version": 1},
     "correction.created"),
]


@pytest.mark.parametrize(("method", "url", "body", "action"), WRITES, ids=[w[3] for w in WRITES])
def test_each_write_is_audited(client_for, project, prompt, trace, users, method, url, body, action):
    before = AuditEvent.objects.count()
    response = getattr(client_for("owner"), method)(url.format(p=project.pk, prompt=prompt.pk, t=trace.pk), body,
                                                    format="json")
    assert response.status_code < 300, response.content
    events = list(AuditEvent.objects.order_by("id")[before:])
    assert [e.action for e in events] == [action]
    assert events[0].actor == users["owner"]
    log = client_for("owner").get(f"/api/projects/{project.pk}/audit/").json()["results"]
    assert log[0]["action"] == action and log[0]["actor"]["username"] == "owner"


def test_refused_write_leaves_no_event(client_for, project):
    before = AuditEvent.objects.count()
    response = client_for("viewer").patch(f"/api/projects/{project.pk}/", {"guidelines": "x"}, format="json")
    assert response.status_code == 403
    assert AuditEvent.objects.count() == before


def test_last_owner_cannot_leave(client_for, project, users):
    from annotator.models import Membership

    mine = Membership.objects.get(project=project, user=users["owner"])
    response = client_for("owner").delete(f"/api/projects/{project.pk}/members/{mine.pk}/")
    assert response.status_code == 409 and "at least one owner" in response.json()["detail"]
    demote = client_for("owner").patch(f"/api/projects/{project.pk}/members/{mine.pk}/", {"role": "viewer"},
                                       format="json")
    assert demote.status_code == 409
