"""What a snapshot leaves out: held-out prompts (always), and redundant steps (``redundant_steps``)."""

from __future__ import annotations

import json

import pytest
from django.db.models import JSONField, Value

from annotator.datasets.materialise import KINDS
from annotator.models import DatasetSnapshot, Prompt, Step, StepOrigin, Trace, TraceStatus
from annotator.services.corrections import correction_create
from annotator.services.labels import step_label_set, trace_review_set
from annotator.services.prompts import prompt_create
from annotator.services.snapshots import snapshot_build

WRONG = ["1. 12 + 30 = 42", "2. 42 - 5 = 36", "3. 36 + 8 = 44"]


@pytest.fixture
def exports(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


def download(client, project, snapshot_id: int) -> list[dict]:
    snapshot = snapshot_build(snapshot_id=snapshot_id)
    assert snapshot.status == "ready", snapshot.error
    response = client.get(f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/?format=jsonl")
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def corrected_prompt(project, users, metadata) -> Prompt:
    """A prompt with a rejected, labelled trace and its accepted corrected branch: a record in every kind."""
    sup = users["supervisor"]
    prompt = prompt_create(project=project, actor=users["owner"], messages=[{"role": "user", "content": "12+30-5+8?"}],
                           category="knowledge", reference="45", metadata=metadata)
    wrong = Trace.objects.create(project=project, prompt=prompt, status=TraceStatus.FINISHED, final_answer="44",
                                 sampling_params={}, seed=1)
    Step.objects.bulk_create([Step(trace=wrong, index=i, text=t) for i, t in enumerate(WRONG)])
    step_label_set(step=wrong.steps.get(index=0), annotator=sup, rating=1)
    step_label_set(step=wrong.steps.get(index=1), annotator=sup, rating=-1)
    trace_review_set(trace=wrong, annotator=sup, verdict="reject", safety_label="safe_without_risk",
                     value_label="bad", knowledge_label="false")
    correction = correction_create(trace=wrong, step_index=1, text="2. 42 - 5 = 37", author=sup,
                                   expected_version=wrong.version)
    branch = correction.corrected_trace
    Step.objects.create(trace=branch, index=2, text="3. 37 + 8 = 45", origin=StepOrigin.MODEL)
    Trace.objects.filter(pk=branch.pk).update(status=TraceStatus.FINISHED, final_answer="45")
    trace_review_set(trace=branch, annotator=sup, verdict="accept", knowledge_label="true")
    return prompt


# --- held-out prompts -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_heldout_prompts_never_reach_a_snapshot(kind, project, users, client_for, exports):
    heldout = corrected_prompt(project, users, {"split": "heldout", "source": "eval set"})
    also_heldout = corrected_prompt(project, users, {"split": "test"})
    train = corrected_prompt(project, users, {"split": "train"})
    plain = corrected_prompt(project, users, {})
    no_split = corrected_prompt(project, users, {"split": None})
    json_null = corrected_prompt(project, users, {})
    # metadata that is JSON null (not an object): ``metadata->'split'`` is NULL, the prompt is not held out.
    Prompt.objects.filter(pk=json_null.pk).update(metadata=Value(None, output_field=JSONField()))

    client = client_for("owner")
    created = client.post(f"/api/projects/{project.pk}/datasets/", {"kind": kind, "eval_fraction": 0}, format="json")
    assert created.status_code == 201, created.json()
    records = download(client, project, created.json()["id"])

    prompt_ids = {r["prompt_id"] for r in records}
    assert prompt_ids == {str(p.pk) for p in (train, plain, no_split, json_null)}
    assert str(heldout.pk) not in prompt_ids and str(also_heldout.pk) not in prompt_ids
    if kind == "sft":
        # One record per prompt: its accepted corrected branch.
        assert len(records) == 4
        assert {r["messages"][-1]["content"] for r in records} == {
            "<think>\n1. 12 + 30 = 42\n2. 42 - 5 = 37\n3. 37 + 8 = 45\n</think>\n45"
        }
    assert DatasetSnapshot.objects.get(pk=created.json()["id"]).filters == {}
