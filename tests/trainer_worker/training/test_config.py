"""StageConfig: from_dict and the plain-words problems validate() reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer_worker.training.config import ConfigError, LoraSettings, StageConfig, device_arguments


def _paths(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "model").mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    return {
        "base_model_path": str(tmp_path / "model"),
        "output_dir": str(tmp_path / "out"),
        "dataset_path": str(tmp_path / "data.jsonl"),
    }


def test_valid_config_from_dict_round_trips(tmp_path: Path) -> None:
    data = {"stage": "sft", **_paths(tmp_path), "lora": {"r": 4, "alpha": 8}, "max_steps": 3}
    config = StageConfig.from_dict(data).validate()
    assert config.lora == LoraSettings(r=4, alpha=8)
    assert StageConfig.from_dict(config.to_dict()) == config


def test_reports_every_problem_at_once(tmp_path: Path) -> None:
    config = StageConfig(
        stage="ppo",
        base_model_path=str(tmp_path / "nowhere"),
        output_dir=str(tmp_path / "out"),
        dataset_path=None,
        learning_rate=0,
    )
    with pytest.raises(ConfigError) as err:
        config.validate()
    problems = err.value.problems
    assert any("unknown stage 'ppo'" in p for p in problems)
    assert any("base model not found" in p for p in problems)
    assert any("dataset_path is missing" in p for p in problems)
    assert any("learning_rate must be positive" in p for p in problems)
    assert len(problems) == 4
    assert "unknown stage 'ppo'" in str(err.value)


def test_grpo_checks_generations_rewards_and_scorer_paths(tmp_path: Path) -> None:
    config = StageConfig.from_dict({
        "stage": "grpo",
        **_paths(tmp_path),
        "per_device_batch_size": 3,
        "num_generations": 2,
        "reward_weights": {"fluency": 1.0, "prm": 0.5},
        "verifier_paths": {"safety": str(tmp_path / "missing"), "style": str(tmp_path)},
    })
    with pytest.raises(ConfigError) as err:
        config.validate()
    text = "\n".join(err.value.problems)
    assert "num_generations (2) must divide the generation batch" in text
    assert "unknown reward name(s): fluency" in text
    assert "safety verifier not found" in text
    assert "unknown verifier kind 'style'" in text
    assert "'prm' reward has a weight but no prm_path" in text


def test_stage_specific_settings(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with pytest.raises(ConfigError, match="verifier_kind must be one of safety, value, knowledge"):
        StageConfig(stage="verifier", **paths).validate()
    with pytest.raises(ConfigError, match="LoRA is not supported for the prm stage"):
        StageConfig(stage="prm", lora=LoraSettings(), **paths).validate()
    with pytest.raises(ConfigError, match="DPO beta must be positive"):
        StageConfig(stage="dpo", beta=0, **paths).validate()
    StageConfig(stage="verifier", verifier_kind="value", **paths).validate()


def test_from_dict_rejects_unknown_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): epochs"):
        StageConfig.from_dict({"stage": "sft", **_paths(tmp_path), "epochs": 3})
    with pytest.raises(ConfigError, match="missing required setting 'output_dir'"):
        StageConfig.from_dict({"stage": "sft", "base_model_path": "x"})


def test_cpu_training_uses_fp32_without_checkpointing() -> None:
    import torch

    args = device_arguments()
    if torch.cuda.is_available():
        assert args["use_cpu"] is False
    else:
        assert args["bf16"] is False
        assert args["use_cpu"] is True
        assert not any(v for k, v in args.items() if k.endswith("_checkpointing"))
