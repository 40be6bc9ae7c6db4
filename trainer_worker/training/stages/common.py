"""Helpers every stage shares: loading datasets, tokenizers and models, rendering prompts, LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer_worker.training.chat import as_messages, completion_text, is_conversational, message_text
from trainer_worker.training.config import LoraSettings, model_dtype

__all__ = ["as_messages", "completion_text", "is_conversational", "message_text"]  # also read from here

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_any_dataset(source: Any) -> Any:
    """A ``datasets.Dataset`` from a Dataset/DatasetDict, a data file, a ``save_to_disk`` folder or
    a folder that ``datasets.load_dataset`` reads (the studio's exports). DatasetDicts give "train"."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        return source["train"]
    if isinstance(source, datasets.Dataset):
        return source
    path = Path(source)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"cannot read dataset file {path} (expected .jsonl, .json, .parquet or .csv)")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        loaded = datasets.load_from_disk(str(path))
        return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(str(path), split="train")


def keep_columns(dataset: Any, wanted: tuple[str, ...], *, required: tuple[str, ...] = ()) -> Any:
    """Drop provenance/metadata columns the trainers would trip over; fail clearly on missing ones."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset lacks column(s) {', '.join(missing)}; it has {', '.join(dataset.column_names)}"
        )
    extra = [c for c in dataset.column_names if c not in wanted]
    return dataset.remove_columns(extra) if extra else dataset


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        # Classification heads find the last real token by the pad id; reuse eos when there is none.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, auto_class: Any, **kwargs: Any) -> Any:
    return auto_class.from_pretrained(str(path), dtype=model_dtype(), **kwargs)


def render_prompt(tokenizer: Any, prompt: Any) -> str:
    """The text the model sees before its answer: the chat template with the generation prompt when
    the tokenizer has one, else the plain prompt text."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    if is_conversational(prompt):
        return "\n".join(message_text(m["content"]) for m in prompt) + "\n"
    return str(prompt)


def render_pair(tokenizer: Any, prompt: Any, response: str) -> str:
    """Prompt plus response as one text, as the verifiers see it (in training and when scoring)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [*as_messages(prompt), {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return render_prompt(tokenizer, prompt) + response


def peft_config(lora: LoraSettings | None, task_type: str) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )


def has_generation_markers(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "generation" in template and "endgeneration" in template
