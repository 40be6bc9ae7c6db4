"""A team: three supervisors, a reviewer and an owner, with prompts and finished traces."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from annotator.models import Membership, Role
from tests.factories import make_prompt, make_trace


@pytest.fixture
def team(project, users):
    User = get_user_model()
    people = {"supervisor": users["supervisor"]}
    for name in ("ann", "bob"):
        people[name] = User.objects.create_user(username=name, password="pw-long-enough-123")
        Membership.objects.create(project=project, user=people[name], role=Role.SUPERVISOR)
    return people


@pytest.fixture
def prompts(project, users):
    return [make_prompt(project, actor=users["owner"], text=f"Compute {i} + {i}.", reference=str(2 * i))
            for i in range(6)]


@pytest.fixture
def traces(project, prompts):
    return [make_trace(project, p, steps=[f"1. {i} + {i} = {2 * i}"], answer=str(2 * i))
            for i, p in enumerate(prompts)]


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
