"""What `make run` sets up on first start: the demo admin and the demo project (the model build itself
is covered by tests/trainer_worker/training/test_demo_model.py)."""

from __future__ import annotations

import pytest

from annotator.demo import DEMO_MODEL, DEMO_PROJECT, HELD_OUT_PROMPTS, seed_project
from annotator.models import Membership, Project
from trainer_worker.training import demo_task
from webapp.devserver import ensure_admin

pytestmark = pytest.mark.django_db


def test_admin_is_created_once_with_a_kept_password(tmp_path):
    admin, password = ensure_admin(tmp_path)
    assert admin.is_superuser and admin.check_password(password) and len(password) >= 12
    again, same = ensure_admin(tmp_path)
    assert (again.pk, same) == (admin.pk, password)
    assert (tmp_path / "admin-password.txt").read_text().strip() == password


def test_demo_project_is_seeded_once_with_held_out_prompts_and_the_serving_model(tmp_path):
    admin, _ = ensure_admin(tmp_path)
    project = seed_project(admin, tmp_path / "demo-model")
    seed_project(admin, tmp_path / "demo-model")  # a second start changes nothing
    assert Project.objects.filter(name=DEMO_PROJECT).count() == 1
    assert Membership.objects.get(project=project, user=admin).role == "owner"
    assert project.serving_model.name == DEMO_MODEL and project.serving_model.path == str(tmp_path / "demo-model")
    prompts = list(project.prompts.all())
    assert len(prompts) == HELD_OUT_PROMPTS
    for prompt in prompts:
        text = prompt.messages[0]["content"]
        assert demo_task.split_of(text) == "heldout"  # never seen in the demo model's training
        assert prompt.reference_answer == demo_task.solve(text).answer
    assert {p.category for p in prompts} == {"knowledge", "safety"}
