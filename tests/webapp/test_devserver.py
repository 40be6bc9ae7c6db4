"""What `make run` sets up on first start: the demo admin and the demo project (the model build itself
is covered by tests/trainer_worker/training/test_demo_model.py)."""

from __future__ import annotations

import pytest

from annotator.demo import DEMO_MODEL, DEMO_PROJECT, HELD_OUT_PER_CLASS, TRAIN_PROMPTS_PER_CLASS, seed_project
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


def test_demo_project_is_seeded_once_with_every_class_and_the_serving_model(
        tmp_path, django_capture_on_commit_callbacks):
    from annotator.datasets.corpus import build_corpus
    from annotator.enqueue import EVALUATE_VERSION

    admin, _ = ensure_admin(tmp_path)
    with django_capture_on_commit_callbacks(execute=False) as first:
        project = seed_project(admin, tmp_path / "demo-model")
    with django_capture_on_commit_callbacks(execute=False) as second:
        seed_project(admin, tmp_path / "demo-model")  # a second start changes nothing
    assert Project.objects.filter(name=DEMO_PROJECT).count() == 1
    assert Membership.objects.get(project=project, user=admin).role == "owner"
    assert project.serving_model.name == DEMO_MODEL and project.serving_model.path == str(tmp_path / "demo-model")
    # A demo trace reads at human pace and pauses itself at a step the rule checker finds wrong.
    project.refresh_from_db()
    assert project.supervision == {"mode": "paced", "pace_tps": 8.0, "scorers": ["rule:demo_task"],
                                   "pause_below": 0.5}
    # The base model's evaluation is queued once, so the dashboard's comparison starts with a point.
    def evaluations(callbacks):
        return [c for c in callbacks if getattr(c, "args", ())[:1] == (EVALUATE_VERSION,)]

    assert len(evaluations(first)) == 1 and evaluations(second) == []
    assert evaluations(first)[0].keywords["version_id"] == project.serving_model_id
    prompts = list(project.prompts.all())
    by_split: dict[str, list] = {"train": [], "heldout": []}
    for prompt in prompts:
        text = prompt.messages[0]["content"]
        klass = demo_task.klass_of(text)
        assert prompt.metadata["klass"] == klass and prompt.category == demo_task.CATEGORY[klass]
        by_split[prompt.metadata["split"]].append(prompt)
        assert demo_task.split_of(text) == prompt.metadata["split"]  # held-out: never in the model's training
        if prompt.category == "knowledge":
            assert prompt.reference_answer == demo_task.solve(text).answer
    assert len(by_split["train"]) == TRAIN_PROMPTS_PER_CLASS * len(demo_task.CLASSES)
    heldout_classes = {p.metadata["klass"] for p in by_split["heldout"]}
    assert heldout_classes == set(demo_task.CLASSES) and len(by_split["heldout"]) <= HELD_OUT_PER_CLASS * 6
    # Held-out prompts never reach a snapshot.
    corpus = build_corpus(project, kind="rl_prompts")
    assert {p.id for p in corpus.prompts} == {p.pk for p in by_split["train"]}
    # The auto-train policy trains from the demo model with the benchmark's recipe.
    policy = project.autotrain_policy
    assert policy["enabled"] and policy["base_model"] == project.serving_model_id
    assert policy["filters"] == {"redundant_steps": "drop"} and policy["config"]["learning_rate"] == 5e-5
