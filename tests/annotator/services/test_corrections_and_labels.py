"""Corrections branch a trace; labels and reviews are one per annotator; stale edits conflict."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from annotator.models import AuditEvent, Correction, Step, StepLabel, Trace

pytestmark = pytest.mark.django_db


def _edit(client, project, trace, **body):
    return client.post(f"/api/projects/{project.pk}/traces/{trace.pk}/corrections/", body, format="json")


def test_correction_creates_a_branch_and_keeps_the_original(client_for, project, trace, users):
    response = _edit(client_for("supervisor"), project, trace, step_index=1, text="2. 42 - 5 = 37 (checked)",
                     expected_version=1, reason="show the check")
    assert response.status_code == 201, response.json()
    body = response.json()
    branch = Trace.objects.get(pk=body["corrected_trace"])
    assert (branch.parent_id, branch.branch_step_index, branch.status) == (trace.pk, 1, "queued")
    assert list(branch.steps.values_list("index", "text", "origin")) == [
        (0, "1. 12 + 30 = 42", "model"),
        (1, "2. 42 - 5 = 37 (checked)", "human"),
    ]
    # The original is unchanged, except that its version moved on.
    assert [s.text for s in trace.steps.all()] == ["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 44"]
    trace.refresh_from_db()
    assert trace.version == 2
    correction = Correction.objects.get()
    assert (correction.old_text, correction.new_text, correction.author) == (
        "2. 42 - 5 = 37", "2. 42 - 5 = 37 (checked)", users["supervisor"])
    event = AuditEvent.objects.get(action="correction.created")
    assert event.data["branch"] == branch.pk and event.actor == users["supervisor"]
    detail = client_for("viewer").get(f"/api/projects/{project.pk}/traces/{trace.pk}/").json()
    assert detail["branches"] == [branch.pk]


def test_stale_edit_conflicts_and_changes_nothing(client_for, project, trace):
    first = _edit(client_for("supervisor"), project, trace, step_index=2, text="3. 37 + 8 = 45", expected_version=1)
    assert first.status_code == 201
    stale = _edit(client_for("owner"), project, trace, step_index=2, text="3. 37 + 8 = 46", expected_version=1)
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_version"
    assert stale.json()["errors"] == {"current_version": 2}
    assert Trace.objects.count() == 2 and Correction.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"step_index": 7, "text": "x", "expected_version": 1}, 404, "unknown_step"),
        ({"step_index": 0, "text": "   ", "expected_version": 1}, 400, "invalid"),
        ({"step_index": 0, "text": "1. 12 + 30 = 42", "expected_version": 1}, 400, "unchanged"),
        ({"step_index": 0, "text": "two\nlines", "expected_version": 1}, 400, "bad_step"),
        ({"step_index": "first", "text": "x", "expected_version": 1}, 400, "invalid"),
        ({"step_index": 0, "text": "x"}, 400, "invalid"),
    ],
)
def test_bad_edits_are_refused(client_for, project, trace, body, status, code):
    response = _edit(client_for("supervisor"), project, trace, **body)
    assert response.status_code == status and response.json()["code"] == code
    assert Trace.objects.count() == 1 and not AuditEvent.objects.filter(action="correction.created").exists()


def test_step_label_upserts_per_annotator(client_for, project, trace, users):
    url = f"/api/projects/{project.pk}/traces/{trace.pk}/steps/2/label/"
    assert client_for("supervisor").put(url, {"rating": -1, "safety_tags": []}, format="json").status_code == 200
    assert client_for("supervisor").put(url, {"rating": "unsure", "note": "not sure"}, format="json").status_code == 200
    assert client_for("owner").put(url, {"rating": 1}, format="json").status_code == 200
    labels = {lbl.annotator.username: lbl.rating for lbl in StepLabel.objects.all()}
    assert labels == {"supervisor": None, "owner": 1}
    assert AuditEvent.objects.filter(action="step_label.set").count() == 3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"rating": 2}, "rating must be"),
        ({"rating": True}, "rating must be"),
        ({"rating": 1, "safety_tags": ["spicy"]}, "Unknown safety tag"),
        ({}, "rating"),
    ],
)
def test_bad_labels_are_refused(client_for, project, trace, body, fragment):
    response = client_for("supervisor").put(f"/api/projects/{project.pk}/traces/{trace.pk}/steps/0/label/", body,
                                            format="json")
    assert response.status_code == 400 and fragment in str(response.json())
    assert not StepLabel.objects.exists()


def test_label_on_unknown_step_is_not_found(client_for, project, trace):
    response = client_for("supervisor").put(f"/api/projects/{project.pk}/traces/{trace.pk}/steps/9/label/",
                                            {"rating": 1}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "unknown_step"


def test_review_with_safework_labels(client_for, project, trace):
    url = f"/api/projects/{project.pk}/traces/{trace.pk}/reviews/"
    bad = client_for("supervisor").put(url, {"verdict": "accept", "safety_label": "mostly_safe"}, format="json")
    assert bad.status_code == 400 and "safety_label must be one of" in bad.json()["detail"]
    ok = client_for("supervisor").put(url, {"verdict": "accept", "safety_label": "safe_with_refusal",
                                            "value_label": "good", "knowledge_label": "true"}, format="json")
    assert ok.status_code == 200
    assert client_for("viewer").get(url).json()[0]["safety_label"] == "safe_with_refusal"


def test_database_refuses_duplicate_step_index(trace):
    with pytest.raises(IntegrityError), transaction.atomic():
        Step.objects.create(trace=trace, index=0, text="again")


def test_audit_log_is_append_only_in_the_database(client_for, project):
    event = AuditEvent.objects.filter(project=project).first()
    with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE annotator_auditevent SET action = 'tampered' WHERE id = %s", [event.pk])
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "project.created"
