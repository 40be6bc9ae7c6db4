"""Assignment: prompts handed to supervisors with an overlap, by round robin, weight or category."""

from __future__ import annotations

from collections import Counter

import pytest

from annotator.errors import InvalidInput
from annotator.models import Assignment
from annotator.services.assignments import assignments_distribute
from tests.annotator.team.conftest import api

NAMES = ["supervisor", "ann", "bob"]


def _who_has(project) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for prompt_id, name in Assignment.objects.filter(project=project).values_list("prompt_id", "annotator__username"):
        out.setdefault(prompt_id, set()).add(name)
    return out


def test_overlap_two_across_three_supervisors(project, users, team, prompts):
    response = api(users["owner"]).post(
        f"/api/projects/{project.pk}/assignments/", {"annotators": NAMES, "overlap": 2}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 12}
    who = _who_has(project)
    assert set(who) == {p.pk for p in prompts}
    assert all(len(names) == 2 for names in who.values())  # two different people per prompt
    load = Counter(name for names in who.values() for name in names)
    assert load == {"supervisor": 4, "ann": 4, "bob": 4}  # 6 prompts x 2 / 3 people, evenly
    # Every pair of supervisors shares prompts, so each pair's agreement can be measured.
    pairs = Counter(tuple(sorted(names)) for names in who.values())
    assert len(pairs) == 3


def test_distributing_again_adds_only_what_is_missing(project, users, team, prompts):
    assignments_distribute(project=project, actor=users["owner"], annotators=NAMES, overlap=1)
    before = _who_has(project)
    created = assignments_distribute(project=project, actor=users["owner"], annotators=NAMES, overlap=2)
    after = _who_has(project)
    assert len(created) == 6
    assert all(before[p] < after[p] and len(after[p]) == 2 for p in before)
    assert assignments_distribute(project=project, actor=users["owner"], annotators=NAMES, overlap=2) == []


def test_weighted_distribution_follows_the_weights(project, users, team, prompts):
    assignments_distribute(project=project, actor=users["owner"], annotators=["ann", "bob"], overlap=1,
                           strategy="weighted", weights={"ann": 2, "bob": 1})
    load = Counter(Assignment.objects.values_list("annotator__username", flat=True))
    assert load == {"ann": 4, "bob": 2}


def test_category_distribution_gives_each_prompt_to_who_takes_its_category(project, users, team, prompts):
    prompts[0].category = "safety"
    prompts[0].save(update_fields=["category"])
    assignments_distribute(project=project, actor=users["owner"], annotators=["ann", "bob"], overlap=1,
                           strategy="category", categories={"ann": ["safety"], "bob": ["knowledge"]})
    who = _who_has(project)
    assert who[prompts[0].pk] == {"ann"}
    assert all(who[p.pk] == {"bob"} for p in prompts[1:])
    with pytest.raises(InvalidInput) as caught:  # nobody takes safety with overlap 2
        assignments_distribute(project=project, actor=users["owner"], annotators=["ann", "bob"], overlap=2,
                               strategy="category", categories={"ann": ["safety"], "bob": ["knowledge"]})
    assert caught.value.code == "not_enough_annotators"


def test_bad_assignments_are_refused_and_nothing_is_assigned(project, users, team, prompts):
    owner = api(users["owner"])
    url = f"/api/projects/{project.pk}/assignments/"
    for body, code in [
        ({"annotators": ["viewer"], "overlap": 1}, "invalid"),  # a viewer cannot review
        ({"annotators": ["outsider"], "overlap": 1}, "unknown_user"),
        ({"annotators": ["ann"], "overlap": 2}, "invalid"),  # more overlap than people
        ({"annotators": ["ann"], "prompts": [10**9]}, "not_found"),
    ]:
        response = owner.post(url, body, format="json")
        assert response.status_code in (400, 404), (body, response.json())
        assert response.json()["code"] == code, (body, response.json())
    assert not Assignment.objects.exists()
