"""CoT-SFT with TRL's SFTTrainer, full fine-tuning or LoRA (peft)."""

from __future__ import annotations

from typing import Any

from trainer_worker.training.config import StageConfig
from trainer_worker.training.stages.common import (
    has_generation_markers,
    keep_columns,
    load_any_dataset,
    load_model,
    load_tokenizer,
    peft_config,
)

_COLUMNS = ("messages", "prompt", "completion", "images")


def _prepare(source: Any) -> Any:
    dataset = load_any_dataset(source)
    if "messages" not in dataset.column_names and not {"prompt", "completion"} <= set(dataset.column_names):
        raise ValueError(
            "an SFT dataset needs a 'messages' column or 'prompt' and 'completion' columns; "
            f"it has {', '.join(dataset.column_names)}"
        )
    return keep_columns(dataset, _COLUMNS)


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path)
    evald = _prepare(config.eval_dataset_path) if config.eval_dataset_path is not None else None
    # Loss on the assistant turns only, when the template marks them; prompt/completion data gets
    # completion-only loss from TRL's default.
    assistant_only = "messages" in train.column_names and has_generation_markers(tokenizer)
    sft_args = SFTConfig(
        **args,
        max_length=config.max_length,
        assistant_only_loss=assistant_only,
        dataset_num_proc=None,
    )
    model = load_model(config.base_model_path, AutoModelForCausalLM)
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora, "CAUSAL_LM"),
        callbacks=callbacks,
    )
    return trainer, tokenizer
