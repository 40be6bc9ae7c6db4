"""A model version's evaluation guided and unguided, side by side (issue 12, item 4): through the
evaluation service the train worker runs (``version_evaluate``), on a real tiny model that greedy
decoding leads to the wrong answer and sampling sometimes to the right one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from annotator.models import ModelVersion, Prompt
from tests.support.models import build_two_minded_lm

pytestmark = pytest.mark.django_db

GUIDE = {"k": 8, "by": "rule:demo_task"}


@pytest.fixture(scope="module")
def two_minded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on shared cores: one thread is the fastest
    yield build_two_minded_lm(tmp_path_factory.mktemp("guided-eval") / "two")
    torch.set_num_threads(before)


def test_a_guided_evaluation_is_stored_beside_the_unguided_one(project, users, two_minded, client_for):
    from annotator.services.training.worker import version_evaluate

    path = two_minded
    version = ModelVersion.objects.create(project=project, name="two-minded", base_model=str(path), path=str(path))
    Prompt.objects.create(project=project, messages=[{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}],
                          category="knowledge", reference_answer="45", metadata={"split": "heldout"},
                          created_by=users["owner"])
    rows = version_evaluate(version_id=version.pk,
                            options={"max_prompts": 4, "max_new_tokens": 96, "guide": GUIDE})
    values = {r.metric: r.value for r in rows}
    # Greedy writes "37 + 8 = 44"; the rule checker, picking the best of 8 samples per step, finds 45.
    assert values["accuracy"] == 0.0 and values["guided.accuracy"] == 1.0
    assert values["general.accuracy"] == 0.0 and values["guided.general.accuracy"] == 1.0
    # The right chain is shorter (it stops at 45): the guided chain of thought is shorter too.
    assert values["guided.mean_cot_tokens"] < values["mean_cot_tokens"]
    guided = [r for r in rows if r.metric.startswith("guided.")]
    assert guided and all(r.details["guide"] == {**GUIDE, "temperature": 1.0} for r in guided)
    assert all("guide" not in r.details for r in rows if not r.metric.startswith("guided."))
    # The dashboard reads both from the project's evaluations.
    listed = client_for("viewer").get(f"/api/projects/{project.pk}/evals/").json()
    assert {"accuracy", "guided.accuracy"} <= {r["metric"] for r in listed}


def test_an_evaluation_without_a_guide_writes_no_guided_rows(project, users, two_minded):
    from annotator.services.training.worker import version_evaluate

    path = two_minded
    version = ModelVersion.objects.create(project=project, name="v", base_model=str(path), path=str(path))
    Prompt.objects.create(project=project, messages=[{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}],
                          category="knowledge", reference_answer="45", metadata={"split": "heldout"},
                          created_by=users["owner"])
    rows = version_evaluate(version_id=version.pk, options={"max_prompts": 4, "max_new_tokens": 16})
    assert rows and not any(r.metric.startswith("guided.") for r in rows)
