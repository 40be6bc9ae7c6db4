"""Scalar reward model from preference pairs (TRL RewardTrainer, Bradley-Terry loss)."""

from __future__ import annotations

from typing import Any

from trainer_worker.training.config import StageConfig
from trainer_worker.training.stages.common import (
    keep_columns,
    load_any_dataset,
    load_model,
    load_tokenizer,
    peft_config,
)

_COLUMNS = ("prompt", "chosen", "rejected")


def _prepare(source: Any) -> Any:
    # RewardTrainer also reads implicit-prompt pairs (no prompt column): keep prompt optional.
    return keep_columns(load_any_dataset(source), _COLUMNS, required=("chosen", "rejected"))


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path)
    evald = _prepare(config.eval_dataset_path) if config.eval_dataset_path is not None else None
    reward_args = RewardConfig(**args, max_length=config.max_length)
    model = load_model(config.base_model_path, AutoModelForSequenceClassification, num_labels=1)
    # The head reads the last non-pad token; without a pad id it cannot find it in a padded batch.
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=reward_args,
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora, "SEQ_CLS"),
        callbacks=callbacks,
    )
    return trainer, tokenizer


def reward_score(model: Any, tokenizer: Any, prompt: Any, response: str) -> float:
    """The reward model's scalar for one (prompt, response)."""
    import torch

    from trainer_worker.training.stages.common import render_pair

    text = render_pair(tokenizer, prompt, response)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        return float(model(**enc).logits[0, 0].float())
