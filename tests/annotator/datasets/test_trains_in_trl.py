"""Each export, as written by the writers and loaded with `datasets`, trains one step in TRL 1.16.

One tiny Llama (and one tiny LLaVA) per session; max_steps=1, no saving, CPU.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from annotator.datasets.materialise import materialise
from annotator.datasets.records import Corpus, CorrectionRec, ReviewRec, StepRec, TraceRec
from annotator.datasets.writers import write_hf_zip
from tests.annotator.datasets.test_materialise import STEPS, build_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CPU = {
    "max_steps": 1,
    "report_to": "none",
    "bf16": False,
    "use_cpu": True,
    "gradient_checkpointing": False,
    "save_strategy": "no",
    "logging_steps": 1,
    "dataloader_num_workers": 0,
}


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer_worker.training.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), hidden_size=32, layers=1, heads=2)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer_worker.training.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="session")
def image_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    path = tmp_path_factory.mktemp("media") / "sign.png"
    Image.new("RGB", (32, 32), "red").save(path)
    return build_corpus(str(path))


def load_export(kind: str, corpus: Corpus, tmp_path: Path, *, images: bool | None = False):
    """Materialise -> write_hf_zip -> unzip -> datasets.load_dataset: what a user does."""
    from datasets import load_dataset

    buf = io.BytesIO()
    write_hf_zip(materialise(kind, corpus, images=images), buf, kind=kind, name=kind, eval_fraction=0.0)
    zipfile.ZipFile(buf).extractall(tmp_path)
    return load_dataset(str(tmp_path / kind))["train"]


def model_and_tokenizer(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def trained_one_step(trainer) -> None:
    result = trainer.train()
    assert trainer.state.global_step == 1
    assert math.isfinite(result.training_loss)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "sft_prompt_completion"])
def test_sft_exports_train_in_sft_trainer(kind: str, tiny_lm: Path, tmp_path: Path) -> None:
    from trl import SFTConfig, SFTTrainer

    ds = load_export(kind, build_corpus(), tmp_path)
    assert len(ds) == 1 and "images" not in ds.column_names
    model, tok = model_and_tokenizer(tiny_lm)
    args = SFTConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=1, max_length=256, **CPU)
    trained_one_step(SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["preference", "preference_step"])
def test_preference_exports_train_in_dpo_trainer(kind: str, tiny_lm: Path, tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    ds = load_export(kind, build_corpus(), tmp_path)
    if kind == "preference_step":  # pairs from a correction and from a pick among alternatives
        assert sorted(set(ds["source"])) == ["alternatives", "correction"]
    model, tok = model_and_tokenizer(tiny_lm)
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=1, max_length=256, **CPU)
    trained_one_step(DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_step_pairs_train_in_the_continuation_context(tiny_lm: Path, tmp_path: Path) -> None:
    """The DPO sequence for a step pair is exactly what the model sees when it continues a
    corrected prefix (chat template + partial assistant message, continue_final_message)."""
    from trl import DPOConfig, DPOTrainer

    ds = load_export("preference_step", build_corpus(), tmp_path)
    model, tok = model_and_tokenizer(tiny_lm)
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=1, **CPU)
    row = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset[0]
    chosen = tok.decode(row["prompt_ids"] + row["chosen_ids"])
    rejected = tok.decode(row["prompt_ids"] + row["rejected_ids"])
    prefix_msg = {"role": "assistant", "content": "<think>\n" + "\n".join(STEPS[:2]) + "\n"}
    context = tok.apply_chat_template(
        [{"role": "user", "content": "What is 6*7?"}, prefix_msg], tokenize=False, continue_final_message=True
    )
    assert chosen.startswith(context + "3. That is 42.")
    assert rejected.startswith(context + "3. That is 41.")
    assert chosen.count("<|im_start|>assistant") == 1  # one assistant turn, not a closed prefix + a new turn


@pytest.mark.slow
def test_preference_export_trains_a_reward_model(tiny_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ds = load_export("preference", build_corpus(), tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_length=256, **CPU)
    trained_one_step(RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_unpaired_export_trains_in_kto_trainer(tiny_lm: Path, tmp_path: Path) -> None:
    from trl import KTOConfig, KTOTrainer

    ds = load_export("unpaired", build_corpus(), tmp_path)
    assert sorted(ds["label"]) == [False, True]
    model, tok = model_and_tokenizer(tiny_lm)
    args = KTOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_length=256, **CPU)
    trained_one_step(KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok))


@pytest.mark.slow
def test_rl_prompts_export_trains_in_grpo_with_reference_reaching_the_reward(tiny_lm: Path, tmp_path: Path) -> None:
    from trl import GRPOConfig, GRPOTrainer

    ds = load_export("rl_prompts", build_corpus(), tmp_path)
    seen: list[tuple[str, str]] = []

    def reward(completions, reference, category, **_):
        seen.extend(zip(reference, category, strict=True))
        return [float(len(c[0]["content"]) % 3) for c in completions]

    model, tok = model_and_tokenizer(tiny_lm)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=16,
        **CPU,
    )
    trained_one_step(GRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, reward_funcs=[reward]))
    assert seen and set(seen) == {("42", "knowledge")}


def test_stepwise_export_matches_trl_stepwise_supervision(tmp_path: Path) -> None:
    from datasets import Value
    from trl.data_utils import is_conversational

    ds = load_export("stepwise", build_corpus(), tmp_path)
    # TRL's stepwise-supervision type: standard prompt, list of step strings, one bool per step.
    assert ds.features["prompt"] == Value("string")
    assert ds.features["completions"].feature == Value("string")
    assert ds.features["labels"].feature == Value("bool")
    for row in ds:
        assert not is_conversational(row)
        assert len(row["completions"]) == len(row["labels"]) > 0
    assert ds[0]["labels"] == [True, True, False]


def with_image_correction(corpus: Corpus) -> Corpus:
    """Add a corrected, accepted branch of the image prompt's trace, so it yields a pair too."""
    t4 = corpus.trace(13)
    branch = TraceRec(
        id=14,
        prompt_id=2,
        parent_id=13,
        branch_step_index=0,
        model_version="m1",
        answer="Yes: slippery floor.",
        created_at=t4.created_at + timedelta(minutes=1),
        steps=[StepRec(0, "1. A yellow wet-floor sign.", "human")],
        reviews=[ReviewRec("bob", verdict="accept")],
    )
    t4_unreviewed = replace(t4, reviews=[])
    corr = CorrectionRec(
        id=2,
        original_trace_id=13,
        corrected_trace_id=14,
        step_index=0,
        old_text=t4.steps[0].text,
        new_text=branch.steps[0].text,
        author="carol",
    )
    traces = [t for t in corpus.traces if t.id != 13]
    return Corpus(
        prompts=corpus.prompts,
        traces=[*traces, t4_unreviewed, branch],
        corrections=[*corpus.corrections, corr],
        comparisons=corpus.comparisons,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "sft_prompt_completion", "preference", "preference_step"])
def test_image_prompt_exports_train_on_a_tiny_vlm(
    kind: str, tiny_vlm: Path, image_corpus: Corpus, tmp_path: Path
) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    ds = load_export(kind, with_image_correction(image_corpus), tmp_path, images=True)
    ds = ds.filter(lambda row: len(row["images"]) > 0)  # the image-prompt rows
    assert len(ds) == 1 and ds[0]["images"][0].size == (32, 32)
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    out = str(tmp_path / "out")
    if kind.startswith("sft"):
        args = SFTConfig(output_dir=out, per_device_train_batch_size=1, max_length=None, **CPU)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    else:
        args = DPOConfig(output_dir=out, per_device_train_batch_size=1, max_length=None, **CPU)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    trained_one_step(trainer)
