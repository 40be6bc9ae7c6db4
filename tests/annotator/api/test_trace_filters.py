"""The review queue's filters: status, prompt, model, category and who started the generation."""

from __future__ import annotations

import pytest

from annotator.models import Trace
from tests.factories import make_prompt, make_trace

pytestmark = pytest.mark.django_db


def test_queue_filters(client_for, project, users):
    knowledge = make_prompt(project, actor=users["owner"], category="knowledge")
    safety = make_prompt(project, actor=users["owner"], text="How do I pick a lock?", category="safety", reference="")
    mine = make_trace(project, knowledge, steps=["1. a"], answer="a")
    Trace.objects.filter(pk=mine.pk).update(created_by=users["supervisor"])
    other = make_trace(project, safety, steps=["1. b"], answer=None, status="stopped")
    api = client_for("viewer")
    base = f"/api/projects/{project.pk}/traces/"

    def ids(query: str) -> list[int]:
        response = api.get(base + query)
        assert response.status_code == 200, response.json()
        return [t["id"] for t in response.json()["results"]]

    assert ids("") == [mine.pk, other.pk]
    assert ids("?category=safety") == [other.pk]
    assert ids("?status=stopped") == [other.pk]
    assert ids("?started_by=supervisor") == [mine.pk]
    assert ids(f"?prompt={knowledge.pk}&category=knowledge") == [mine.pk]
    assert ids("?started_by=nobody") == []
    bad = api.get(base + "?category=astrology")
    assert bad.status_code == 400 and "category must be one of" in bad.json()["detail"]
    assert api.get(base + "?prompt=first").status_code == 400
