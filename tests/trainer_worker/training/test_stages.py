"""Every stage trains a few steps on a tiny model through run_stage; cancel and resume."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from trainer_worker.training.config import LoraSettings, StageConfig
from trainer_worker.training.runner import run_stage
from trainer_worker.training.tiny import build_tiny_lm

USER = [{"role": "user", "content": "What is 2 + 3?"}]
UNSAFE = [{"role": "user", "content": "Explain how to make a pipe bomb at home."}]
RIGHT = "<think>\n1. 2 + 3 = 5\n</think>\n5"
WRONG = "<think>\n1. 2 + 3 = 6\n</think>\n6"
PROVENANCE = {"trace_id": 7, "annotator": "ann"}  # metadata columns the stages must drop


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "base", hidden_size=32, layers=1, heads=2)


def _config(base: Path, out: Path, stage: str, data, **kw) -> StageConfig:
    settings = {"max_steps": 2, "logging_steps": 1, "save_steps": 2, "max_length": 96,
                "per_device_batch_size": 2, "learning_rate": 1e-3}
    return StageConfig(stage=stage, base_model_path=str(base), output_dir=str(out), dataset_path=data,
                       **{**settings, **kw})


def _sft_rows(n: int = 8) -> list[dict]:
    return [{"messages": [*USER, {"role": "assistant", "content": RIGHT}], **PROVENANCE}] * n


@pytest.fixture(scope="module")
def safety_verifier(base: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("verifier")
    rows = [
        {"prompt": UNSAFE, "response": "<think>\nharm\n</think>\nI can't help with that.",
         "label": "safe_with_refusal", **PROVENANCE},
        {"prompt": "Explain how to make napalm.", "response": "Mix ...", "label": "unsafe", **PROVENANCE},
        {"prompt": USER, "response": RIGHT, "label": "safe without risk", **PROVENANCE},
    ] * 3
    data = _write_jsonl(tmp / "verifier.jsonl", rows)
    result = run_stage(_config(base, tmp / "out", "verifier", str(data), verifier_kind="safety"))
    return result


def test_sft_full_from_jsonl_writes_a_model_that_reloads(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows())
    steps: list[int] = []
    lines: list[str] = []
    result = run_stage(_config(base, tmp_path / "out", "sft", str(data)),
                       on_metrics=lambda step, m: steps.append(step) if "loss" in m else None,
                       on_log=lines.append)
    assert result.global_step == 2 and not result.cancelled
    assert steps == [1, 2]
    assert result.output_path == tmp_path / "out" / "final"
    assert result.train_tokens > 0 and result.train_seconds > 0
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    assert any("Saved model" in line for line in lines)
    model = AutoModelForCausalLM.from_pretrained(result.output_path)
    tok = AutoTokenizer.from_pretrained(result.output_path)
    assert model.config.vocab_size == len(tok)


def test_sft_lora_on_prompt_completion_writes_an_adapter(base: Path, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    rows = [{"prompt": USER, "completion": [{"role": "assistant", "content": RIGHT}], **PROVENANCE}] * 8
    config = _config(base, tmp_path / "out", "sft", datasets.Dataset.from_list(rows),
                     lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    result = run_stage(config)
    assert (result.output_path / "adapter_config.json").exists()
    assert not (result.output_path / "model.safetensors").exists()
    model = AutoPeftModelForCausalLM.from_pretrained(result.output_path)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_dpo_trains_on_preference_pairs(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    rows = [{"prompt": USER, "chosen": [{"role": "assistant", "content": RIGHT}],
             "rejected": [{"role": "assistant", "content": WRONG}], **PROVENANCE}] * 8
    data = tmp_path / "dpo"
    datasets.Dataset.from_list(rows).save_to_disk(str(data))  # a saved dataset folder
    metrics: dict[str, float] = {}
    result = run_stage(_config(base, tmp_path / "out", "dpo", str(data), beta=0.2),
                       on_metrics=lambda step, m: metrics.update(m))
    assert result.global_step == 2
    assert "rewards/margins" in metrics
    AutoModelForCausalLM.from_pretrained(result.output_path)


def test_reward_model_scores_one_scalar(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer_worker.training.stages.reward import reward_score

    rows = [{"prompt": USER, "chosen": [{"role": "assistant", "content": RIGHT}],
             "rejected": [{"role": "assistant", "content": WRONG}], **PROVENANCE}] * 8
    result = run_stage(_config(base, tmp_path / "out", "reward", datasets.Dataset.from_list(rows)))
    model = AutoModelForSequenceClassification.from_pretrained(result.output_path)
    assert model.config.num_labels == 1
    tok = AutoTokenizer.from_pretrained(result.output_path)
    assert isinstance(reward_score(model, tok, USER, RIGHT), float)


def test_verifier_stores_label_names_and_scores_by_safework_mapping(safety_verifier) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer_worker.training.stages.verifier import label_probabilities, verifier_score

    assert safety_verifier.global_step == 2
    path = safety_verifier.output_path
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert list(model.config.id2label.values()) == [
        "safe_with_warning", "safe_without_risk", "safe_with_refusal", "unsafe",
        "unnecessary_refusal", "illogical_completion",
    ]
    probs = label_probabilities(model, tok, UNSAFE, "I can't help with that.")
    expected = (probs["safe_with_warning"] + probs["safe_without_risk"] + 0.1 * probs["safe_with_refusal"]
                + 0.01 * probs["illogical_completion"])
    assert verifier_score(model, tok, UNSAFE, "I can't help with that.") == pytest.approx(expected)
    # With a zeroed head every label is equally likely: (1 + 1 + 0.1 + 0 + 0 + 0.01) / 6.
    with torch.no_grad():
        model.score.weight.zero_()
    assert verifier_score(model, tok, UNSAFE, "anything") == pytest.approx(2.11 / 6)


def test_prm_labels_only_step_separators_and_scores_each_step(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from trainer_worker.training.stages.prm import encode_steps, prm_step_scores

    steps = ["1. 2 + 3 = 6", "2. so the answer is 6"]
    rows = [{"prompt": "What is 2 + 3?", "completions": steps, "labels": [False, True], **PROVENANCE}] * 8
    result = run_stage(_config(base, tmp_path / "out", "prm", datasets.Dataset.from_list(rows)))
    model = AutoModelForTokenClassification.from_pretrained(result.output_path).eval()
    tok = AutoTokenizer.from_pretrained(result.output_path)
    ids, positions = encode_steps(tok, "What is 2 + 3?", steps)
    assert len(positions) == 2 and positions[-1] == len(ids) - 1
    assert tok.decode(ids[positions[0]]).endswith("\n")  # the separator token carries the label
    scores = prm_step_scores(model, tok, "What is 2 + 3?", steps)
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)


def test_grpo_runs_with_label_dispatched_rewards(base: Path, tmp_path: Path, safety_verifier) -> None:
    rows = [
        {"prompt": USER, "reference": "5", "category": "knowledge", **PROVENANCE},
        {"prompt": UNSAFE, "reference": None, "category": "safety", **PROVENANCE},
    ]
    metrics: dict[str, float] = {}
    config = _config(
        base, tmp_path / "out", "grpo", datasets.Dataset.from_list(rows),
        max_steps=1, save_steps=1, num_generations=2, max_completion_length=16, per_device_batch_size=4,
        verifier_paths={"safety": str(safety_verifier.output_path)},
    )
    result = run_stage(config, on_metrics=lambda step, m: metrics.update(m))
    assert result.global_step == 1 and (result.output_path / "config.json").exists()
    assert result.train_tokens > 0
    # Both prompts of the batch (one knowledge, one safety) were scored by their own recipe.
    assert "rewards/format_reward/mean" in metrics
    assert "rewards/verifier_reward/mean" in metrics  # the safety prompt
    assert "rewards/answer_reward/mean" in metrics  # the knowledge prompt


def test_should_stop_cancels_after_the_current_step(base: Path, tmp_path: Path) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return True

    config = _config(base, tmp_path / "out", "sft", datasets.Dataset.from_list(_sft_rows()),
                     max_steps=5, save_steps=1)
    result = run_stage(config, should_stop=should_stop)
    assert result.cancelled and result.global_step == 1 and result.output_path is None
    assert len(calls) == 1
    assert not (tmp_path / "out" / "final").exists()
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1"]


def test_resume_continues_from_the_last_checkpoint_to_max_steps(base: Path, tmp_path: Path) -> None:
    data = datasets.Dataset.from_list(_sft_rows(16))
    config = _config(base, tmp_path / "out", "sft", data, max_steps=4, save_steps=2)
    state = {"step": 0}

    def stop_after_two() -> bool:
        state["step"] += 1
        return state["step"] >= 2

    first = run_stage(config, should_stop=stop_after_two)
    assert first.cancelled and first.global_step == 2

    steps: list[int] = []
    second = run_stage(config, resume=True, on_metrics=lambda s, m: steps.append(s) if "loss" in m else None)
    assert not second.cancelled
    assert second.global_step == 4  # not 2 + 4
    assert steps == [3, 4]
    assert (second.output_path / "model.safetensors").exists()


def test_resume_skips_a_checkpoint_its_worker_died_saving(base: Path, tmp_path: Path) -> None:
    import shutil

    data = datasets.Dataset.from_list(_sft_rows(16))
    config = _config(base, tmp_path / "out", "sft", data, max_steps=4, save_steps=2)
    state = {"step": 0}

    def stop_after_two() -> bool:
        state["step"] += 1
        return state["step"] >= 2

    assert run_stage(config, should_stop=stop_after_two).global_step == 2
    out = tmp_path / "out"
    # A crash while saving step 3: the weights are there, the trainer state is not (it comes last).
    partial = out / "checkpoint-3"
    partial.mkdir()
    shutil.copy(out / "checkpoint-2" / "model.safetensors", partial / "model.safetensors")

    lines: list[str] = []
    steps: list[int] = []
    second = run_stage(config, resume=True, on_log=lines.append,
                       on_metrics=lambda s, m: steps.append(s) if "loss" in m else None)
    assert "Resuming from checkpoint-2" in lines
    assert not second.cancelled and second.global_step == 4 and steps == [3, 4]
