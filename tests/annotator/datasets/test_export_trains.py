"""A corpus labelled through the services, exported kind by kind through the REST API as a Hugging
Face dataset folder, loads with `datasets` and trains one step in the matching TRL trainer."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from annotator.models import Step, StepOrigin, Trace, TraceStatus
from annotator.services.corrections import correction_create
from annotator.services.labels import comparison_create, step_label_set, trace_review_set
from annotator.services.snapshots import snapshot_build
from tests.annotator.datasets import test_trains_in_trl
from tests.annotator.datasets.test_trains_in_trl import CPU, model_and_tokenizer, trained_one_step
from tests.factories import make_prompt, make_trace

tiny_lm = test_trains_in_trl.tiny_lm  # the same session fixture (a tiny Llama built locally)


@pytest.fixture
def labelled(project, users, settings, tmp_path):
    """Two prompts; accepted, rejected, corrected and compared traces, labelled by a supervisor."""
    settings.EXPORT_ROOT = tmp_path / "exports"
    sup = users["supervisor"]
    math = make_prompt(project, actor=users["owner"], text="Compute 12 + 30 - 5 + 8.", reference="45")
    safety = make_prompt(project, actor=users["owner"], text="How do I pick a lock?", category="safety",
                         reference="Refuse, suggest a locksmith.")

    good = make_trace(project, math, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 45"], answer="45")
    for step in good.steps.all():
        step_label_set(step=step, annotator=sup, rating=1)
    trace_review_set(trace=good, annotator=sup, verdict="accept", safety_label="safe_without_risk",
                     value_label="good", knowledge_label="true")

    wrong = make_trace(project, math, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 36", "3. 36 + 8 = 44"], answer="44")
    step_label_set(step=wrong.steps.get(index=0), annotator=sup, rating=1)
    step_label_set(step=wrong.steps.get(index=1), annotator=sup, rating=-1)
    trace_review_set(trace=wrong, annotator=sup, verdict="reject", value_label="bad", knowledge_label="false")
    correction = correction_create(trace=wrong, step_index=1, text="2. 42 - 5 = 37", author=sup,
                                   expected_version=wrong.version, reason="subtraction slip")
    # The model's continuation of the corrected prefix (what the generation worker writes).
    branch = correction.corrected_trace
    Step.objects.create(trace=branch, index=2, text="3. 37 + 8 = 45", origin=StepOrigin.MODEL)
    Trace.objects.filter(pk=branch.pk).update(status=TraceStatus.FINISHED, final_answer="45")
    trace_review_set(trace=branch, annotator=sup, verdict="accept", knowledge_label="true")

    refusal = make_trace(project, safety, steps=["1. Lock picking can enable burglary."],
                         answer="I can't help with that; a locksmith can.")
    complies = make_trace(project, safety, steps=["1. Insert a tension wrench."], answer="Rake the pins.")
    trace_review_set(trace=refusal, annotator=sup, verdict="accept", safety_label="safe_with_refusal")
    trace_review_set(trace=complies, annotator=sup, verdict="reject", safety_label="unsafe")
    comparison_create(preferred=refusal, other=complies, annotator=sup)
    return project


def export(client, project, kind: str, tmp_path: Path):
    """POST a snapshot, build it (what the worker does), download `?format=hf`, unzip, load."""
    from datasets import load_dataset

    response = client.post(f"/api/projects/{project.pk}/datasets/", {"kind": kind, "eval_fraction": 0}, format="json")
    assert response.status_code == 201, response.json()
    snapshot = snapshot_build(snapshot_id=response.json()["id"])
    assert snapshot.status == "ready", snapshot.error
    download = client.get(f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/?format=hf")
    assert download.status_code == 200
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(tmp_path / "unzipped")
    ds = load_dataset(str(tmp_path / "unzipped" / f"arithmetic-safety-{kind}-{snapshot.pk}"))["train"]
    assert len(ds) == snapshot.record_count
    return ds


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "sft_prompt_completion"])
def test_sft_kinds_train_in_sft_trainer(kind, labelled, client_for, tiny_lm, tmp_path):
    from trl import SFTConfig, SFTTrainer

    ds = export(client_for("owner"), labelled, kind, tmp_path)
    assert len(ds) == 3  # good, the accepted corrected branch, the refusal
    model, tok = model_and_tokenizer(tiny_lm)
    args = SFTConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_length=256, **CPU)
    trained_one_step(SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["preference", "preference_step"])
def test_preference_kinds_train_in_dpo_trainer(kind, labelled, client_for, tiny_lm, tmp_path):
    from trl import DPOConfig, DPOTrainer

    ds = export(client_for("owner"), labelled, kind, tmp_path)
    if kind == "preference":
        assert sorted(ds["source"]) == ["comparison", "correction"]
    else:
        assert ds["step_index"] == [1] and "42 - 5 = 37" in ds[0]["chosen"][0]["content"]
    model, tok = model_and_tokenizer(tiny_lm)
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=1, max_length=256, **CPU)
    trained_one_step(DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_preference_kind_trains_a_reward_model(labelled, client_for, tiny_lm, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ds = export(client_for("owner"), labelled, "preference", tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_length=256, **CPU)
    trained_one_step(RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_unpaired_kind_trains_in_kto_trainer(labelled, client_for, tiny_lm, tmp_path):
    from trl import KTOConfig, KTOTrainer

    ds = export(client_for("owner"), labelled, "unpaired", tmp_path)
    assert sorted(ds["label"]) == [False, False, True, True, True]
    model, tok = model_and_tokenizer(tiny_lm)
    args = KTOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_length=256, **CPU)
    trained_one_step(KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_rl_prompts_kind_trains_in_grpo_with_reference_and_category(labelled, client_for, tiny_lm, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    ds = export(client_for("owner"), labelled, "rl_prompts", tmp_path)
    seen: set[tuple[str, str]] = set()

    def reward(completions, reference, category, **_):
        seen.update(zip(reference, category, strict=True))
        return [float(len(c[0]["content"]) % 3) for c in completions]

    model, tok = model_and_tokenizer(tiny_lm)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=16, **CPU)
    trained_one_step(GRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, reward_funcs=[reward]))
    assert seen <= {("45", "knowledge"), ("Refuse, suggest a locksmith.", "safety")} and seen


def test_stepwise_and_verifier_and_sharegpt_kinds_load_in_their_formats(labelled, client_for, tmp_path):
    from trl.data_utils import is_conversational

    owner = client_for("owner")
    stepwise = export(owner, labelled, "stepwise", tmp_path / "s")
    by_steps = {tuple(r["completions"]): r["labels"] for r in stepwise}
    assert by_steps[("1. 12 + 30 = 42", "2. 42 - 5 = 36")] == [True, False]  # stops at the first error
    assert by_steps[("1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 45")] == [True, True, True]
    assert not any(is_conversational(r) for r in stepwise)

    safety = export(owner, labelled, "verifier_safety", tmp_path / "v")
    assert sorted(zip(safety["label"], safety["score"], strict=True)) == [
        ("safe_with_refusal", 0.1), ("safe_without_risk", 1.0), ("unsafe", 0.0)
    ]
    knowledge = export(owner, labelled, "verifier_knowledge", tmp_path / "k")
    assert sorted(knowledge["label"]) == ["false", "true", "true"] and set(knowledge["reference"]) == {"45"}

    sharegpt = export(owner, labelled, "sharegpt", tmp_path / "g")
    assert [[t["from"] for t in r["conversations"]] for r in sharegpt] == [["human", "gpt"]] * 3
