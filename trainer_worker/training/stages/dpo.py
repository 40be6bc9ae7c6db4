"""DPO (whole-answer and step-level pairs alike: step pairs carry the shared prefix in the prompt)."""

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

_COLUMNS = ("prompt", "chosen", "rejected", "images")


def _prepare(source: Any) -> Any:
    return keep_columns(load_any_dataset(source), _COLUMNS, required=("prompt", "chosen", "rejected"))


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path)
    evald = _prepare(config.eval_dataset_path) if config.eval_dataset_path is not None else None
    dpo_args = DPOConfig(**args, beta=config.beta, max_length=config.max_length)
    model = load_model(config.base_model_path, AutoModelForCausalLM)
    # No ref_model: TRL uses a frozen copy of the start model (or the adapter-free base with LoRA).
    trainer = DPOTrainer(
        model=model,
        args=dpo_args,
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora, "CAUSAL_LM"),
        callbacks=callbacks,
    )
    return trainer, tokenizer
