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


# --- redundant steps --------------------------------------------------------------------------------

STEPS = ["1. 12 + 30 = 42", "2. 42 is even", "3. 42 - 5 = 37", "4. 37 + 8 = 45"]


def accepted_trace(project, prompt, users, ratings: dict[str, list[int | None]]) -> Trace:
    """An accepted trace with the step ratings given per annotator (one list per annotator)."""
    trace = Trace.objects.create(project=project, prompt=prompt, status=TraceStatus.FINISHED, final_answer="45",
                                 sampling_params={}, seed=1)
    Step.objects.bulk_create([Step(trace=trace, index=i, text=t) for i, t in enumerate(STEPS)])
    for who, per_step in ratings.items():
        for step, rating in zip(trace.steps.order_by("index"), per_step, strict=True):
            step_label_set(step=step, annotator=users[who], rating=rating)
    trace_review_set(trace=trace, annotator=users["supervisor"], verdict="accept")
    return trace


def completion_of(kind: str, record: dict) -> str:
    if kind == "sft":
        return record["messages"][-1]["content"]
    if kind == "sft_prompt_completion":
        return record["completion"][0]["content"]
    return record["conversations"][-1]["value"]


def think(*steps: str) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n45"


@pytest.fixture
def redundant(project, users):
    """One trace whose step 1 the supervisor rated 0; one where a 0 is outvoted; one with no 0."""
    prompt = prompt_create(project=project, actor=users["owner"], messages=[{"role": "user", "content": "12+30-5+8?"}],
                           category="knowledge", reference="45")
    return {
        "redundant": accepted_trace(project, prompt, users, {"supervisor": [1, 0, 1, 1]}),
        # 0 from one annotator and +1 from another: no majority says redundant, the step stays.
        "tie": accepted_trace(project, prompt, users, {"supervisor": [1, 0, 1, 1], "reviewer": [1, 1, None, 1]}),
        "clean": accepted_trace(project, prompt, users, {"supervisor": [1, 1, 1, None]}),
    }


@pytest.mark.parametrize("kind", ["sft", "sft_prompt_completion", "sharegpt"])
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, {"redundant": think(*STEPS), "tie": think(*STEPS), "clean": think(*STEPS)}),
        ("keep", {"redundant": think(*STEPS), "tie": think(*STEPS), "clean": think(*STEPS)}),
        ("drop", {"redundant": think(STEPS[0], *STEPS[2:]), "tie": think(*STEPS), "clean": think(*STEPS)}),
        ("exclude", {"tie": think(*STEPS), "clean": think(*STEPS)}),
    ],
)
def test_redundant_steps_keep_drop_or_exclude(kind, mode, expected, redundant, project, client_for, exports):
    client = client_for("owner")
    filters = {} if mode is None else {"redundant_steps": mode}
    created = client.post(f"/api/projects/{project.pk}/datasets/", {"kind": kind, "filters": filters}, format="json")
    assert created.status_code == 201, created.json()
    # The snapshot stores the normalised filter: the default is not written, the others are.
    assert created.json()["filters"] == ({"redundant_steps": mode} if mode in ("drop", "exclude") else {})
    records = download(client, project, created.json()["id"])

    by_trace = {record["trace_ids"][0]: completion_of(kind, record) for record in records}
    assert by_trace == {str(redundant[name].pk): text for name, text in expected.items()}
    if mode == "drop":
        dropped = next(r for r in records if r["trace_ids"] == [str(redundant["redundant"].pk)])
        assert dropped["annotators"] == ["supervisor"]  # the reviewer who accepted, who also rated the step 0


def test_redundant_steps_leave_other_kinds_alone(redundant, project, client_for, exports):
    client = client_for("owner")
    texts = []
    for mode in ("keep", "exclude"):
        body = {"kind": "unpaired", "filters": {"redundant_steps": mode}}
        created = client.post(f"/api/projects/{project.pk}/datasets/", body, format="json")
        texts.append(sorted(r["completion"][0]["content"] for r in download(client, project, created.json()["id"])))
    assert texts[0] == texts[1] and len(texts[0]) == 3


@pytest.mark.parametrize("value", ["remove", "", 0, ["drop"]])
def test_bad_redundant_steps_answers_400(value, project, client_for, exports):
    body = {"kind": "sft", "filters": {"redundant_steps": value}}
    response = client_for("owner").post(f"/api/projects/{project.pk}/datasets/", body, format="json")
    assert response.status_code == 400
    assert "redundant_steps" in json.dumps(response.json())
    assert not DatasetSnapshot.objects.filter(project=project).exists()


def test_service_refuses_bad_redundant_steps_naming_the_choices(project, users, exports):
    from annotator.errors import InvalidInput
    from annotator.services.snapshots import snapshot_create

    with pytest.raises(InvalidInput, match=r"redundant_steps must be one of keep, drop, exclude, not 'remove'"):
        snapshot_create(project=project, actor=users["owner"], kind="sft", filters={"redundant_steps": "remove"})
