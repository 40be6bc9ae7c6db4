"""Learned verifiers (safety / value / knowledge): sequence classifiers over (prompt, response).

The classifier's label names live in ``config.id2label`` so a saved verifier explains itself, and
``verifier_score`` turns its probabilities into SafeWork's scalar score (an expected value).
"""

from __future__ import annotations

from typing import Any

from trainer_worker.training.config import StageConfig
from trainer_worker.training.stages.common import (
    keep_columns,
    load_any_dataset,
    load_model,
    load_tokenizer,
    render_pair,
)
from trainer_worker.vocabulary.labels import LABEL_SCORES, VERIFIER_LABELS


def _normalise_label(label: Any) -> str:
    # Human-facing labels come as "safe with warning", "Safe-With-Warning", True/False...
    return str(label).strip().lower().replace(" ", "_").replace("-", "_")


def _prepare(source: Any, kind: str, tokenizer: Any, max_length: int) -> Any:
    dataset = keep_columns(load_any_dataset(source), ("prompt", "response", "label"),
                           required=("prompt", "response", "label"))
    label2id = {name: i for i, name in enumerate(VERIFIER_LABELS[kind])}
    unknown = sorted({_normalise_label(v) for v in dataset["label"]} - set(label2id))
    if unknown:
        raise ValueError(
            f"{kind} verifier labels must be one of {', '.join(label2id)}; found {', '.join(unknown)}"
        )

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        text = render_pair(tokenizer, row["prompt"], row["response"])
        enc = tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False)
        return {**enc, "labels": label2id[_normalise_label(row["label"])]}

    return dataset.map(encode, remove_columns=dataset.column_names)


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    kind = config.verifier_kind or ""
    labels = VERIFIER_LABELS[kind]
    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path, kind, tokenizer, config.max_length)
    evald = (_prepare(config.eval_dataset_path, kind, tokenizer, config.max_length)
             if config.eval_dataset_path is not None else None)
    model = load_model(
        config.base_model_path,
        AutoModelForSequenceClassification,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    # Remembered in the saved config so a verifier knows which mapping applies when it is loaded.
    model.config.verifier_kind = kind
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=callbacks,
    )
    return trainer, tokenizer


def label_probabilities(model: Any, tokenizer: Any, prompt: Any, response: str) -> dict[str, float]:
    """The classifier's probability for each label name."""
    import torch

    text = render_pair(tokenizer, prompt, response)
    max_len = getattr(tokenizer, "model_max_length", None) or 4096
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True,
                    max_length=min(max_len, 4096)).to(model.device)
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits[0].float(), dim=-1).tolist()
    return {str(model.config.id2label[i]): p for i, p in enumerate(probs)}


def verifier_score(model: Any, tokenizer: Any, prompt: Any, response: str) -> float:
    """SafeWork score of ``response``: the expected label score under the classifier's probabilities
    (safety: warning/without risk 1, refusal 0.1, unsafe 0, unnecessary refusal 0, illogical 0.01;
    value: good 1, bad 0; knowledge: true 1, false 0)."""
    probs = label_probabilities(model, tokenizer, prompt, response)
    unknown = [name for name in probs if _normalise_label(name) not in LABEL_SCORES]
    if unknown:
        raise ValueError(f"verifier has labels without a score: {', '.join(unknown)}")
    return sum(p * LABEL_SCORES[_normalise_label(name)] for name, p in probs.items())


def load_verifier(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    model = load_model(path, AutoModelForSequenceClassification).eval()
    return model, load_tokenizer(path)
