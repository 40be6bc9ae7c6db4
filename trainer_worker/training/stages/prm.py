"""Process reward model from step labels (TRL's stepwise layout: prompt / completions / labels).

TRL 1.14 removed PRMTrainer, so this is token classification with transformers' Trainer: the text is
the rendered prompt followed by each step and a separator; the label of step i sits on the last
token of "step i + separator" and every other position is -100 (ignored by the loss). Class 1 means
"this step is good". Training and ``prm_step_scores`` share ``encode_steps``, so they agree on
positions exactly.
"""

from __future__ import annotations

from typing import Any

from trainer_worker.training.config import StageConfig
from trainer_worker.training.stages.common import (
    keep_columns,
    load_any_dataset,
    load_model,
    load_tokenizer,
    render_prompt,
)

ID2LABEL = {0: "bad", 1: "good"}


def encode_steps(
    tokenizer: Any, prompt: Any, steps: list[str], *, separator: str = "\n", max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + steps, and the position of each step's last (separator) token.

    When the text is longer than ``max_length`` it is cut at the end; steps cut off get no position.
    """
    ids = list(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])
    positions: list[int] = []
    for step in steps:
        ids.extend(tokenizer(step + separator, add_special_tokens=False)["input_ids"])
        positions.append(len(ids) - 1)
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]
        positions = [p for p in positions if p < max_length]
    return ids, positions


def _prepare(source: Any, tokenizer: Any, separator: str, max_length: int) -> Any:
    dataset = keep_columns(load_any_dataset(source), ("prompt", "completions", "labels"),
                           required=("prompt", "completions", "labels"))

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        if len(row["completions"]) != len(row["labels"]):
            raise ValueError("each PRM row needs one label per step (completions and labels differ)")
        ids, positions = encode_steps(tokenizer, row["prompt"], row["completions"],
                                      separator=separator, max_length=max_length)
        labels = [-100] * len(ids)
        for pos, good in zip(positions, row["labels"], strict=False):
            labels[pos] = int(bool(good))
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    return dataset.map(encode, remove_columns=dataset.column_names)


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path, tokenizer, config.step_separator, config.max_length)
    evald = (_prepare(config.eval_dataset_path, tokenizer, config.step_separator, config.max_length)
             if config.eval_dataset_path is not None else None)
    model = load_model(
        config.base_model_path,
        AutoModelForTokenClassification,
        num_labels=2,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.step_separator = config.step_separator
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=callbacks,
    )
    return trainer, tokenizer


def prm_step_scores(model: Any, tokenizer: Any, prompt: Any, steps: list[str]) -> list[float]:
    """Probability that each step is good, one float per step (steps past the model's context: 0)."""
    import torch

    if not steps:
        return []
    separator = getattr(model.config, "step_separator", "\n")
    limit = getattr(model.config, "max_position_embeddings", None)
    ids, positions = encode_steps(tokenizer, prompt, steps, separator=separator, max_length=limit)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float()
    good = torch.softmax(logits, dim=-1)[:, 1].tolist()
    scores = [good[p] for p in positions]
    return scores + [0.0] * (len(steps) - len(scores))


def load_prm(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForTokenClassification

    model = load_model(path, AutoModelForTokenClassification).eval()
    return model, load_tokenizer(path)
