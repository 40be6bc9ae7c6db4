"""Plain configuration for one training stage (no Django; the Celery task builds it from a TrainingRun).

Device policy (STACK.md): with CUDA present, train in bf16 with gradient checkpointing; on a CPU-only
machine train in fp32 with ``use_cpu=True`` and no gradient checkpointing (TRL's defaults — bf16 and
checkpointing on — fail or crawl on CPU). ``device_arguments()`` is the one place that decides.

More than one process: ``num_processes`` (1 to 64; unset means one per GPU on a CUDA machine and 1
on a CPU-only one) makes ``launch.train`` start the stage under ``accelerate launch`` (see
``launch``); the transformers/TRL trainers pick up the distributed environment it sets
(``WORLD_SIZE``, ``LOCAL_RANK``...). ``per_device_batch_size`` stays per process, so the global batch
is ``per_device_batch_size * gradient_accumulation_steps * num_processes``; for GRPO
``num_generations`` must divide that global batch (``validate`` checks the single-process case,
which is the strictest). ``run_stage`` forwards metrics and log lines from the main process only;
``should_stop`` runs on every rank and the ranks agree by an all-reduce (any rank seeing a cancel
stops all of them at the same optimizer step, never leaving one rank waiting in a collective).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_worker.vocabulary.labels import VERIFIER_LABELS
from trainer_worker.vocabulary.stages import STAGES as STAGE_TITLES

STAGES = tuple(STAGE_TITLES)  # the shared vocabulary's stage names, in its order

MAX_PROCESSES = 64  # the cap on num_processes (8 nodes of 8 GPUs)

REWARD_NAMES = ("format", "answer", "verifier", "prm", "length")

# Which reward terms apply to a prompt, by its category (M³-RL's label dispatch). A category that is
# not listed falls back to "general".
DEFAULT_CATEGORY_RECIPES: dict[str, tuple[str, ...]] = {
    "safety": ("format", "verifier"),
    "knowledge": ("format", "answer", "length"),
    "value": ("format", "verifier"),
    "general": ("format", "prm"),
}

DEFAULT_REWARD_WEIGHTS: dict[str, float] = {
    "format": 1.0,
    "answer": 1.0,
    "verifier": 1.0,
    "prm": 0.0,
    "length": 0.5,
}


class ConfigError(ValueError):
    """A stage configuration that cannot run; ``problems`` lists every reason in plain words."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("Invalid training configuration:\n- " + "\n- ".join(self.problems))


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class StageConfig:
    stage: str
    base_model_path: str
    output_dir: str
    # A path that ``datasets.load_dataset`` reads (a saved folder, JSONL, Parquet) or a Dataset object.
    dataset_path: Any = None
    eval_dataset_path: Any = None
    lora: LoraSettings | None = None
    learning_rate: float = 5e-5
    max_steps: int = -1  # -1: train for num_train_epochs instead
    num_train_epochs: float = 1.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 0
    max_length: int = 1024
    # dpo
    beta: float = 0.1
    # verifier
    verifier_kind: str | None = None
    # prm: each step is followed by this separator; its last token carries the step's label
    step_separator: str = "\n"
    # grpo
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    # KL penalty to the starting model (TRL's GRPOConfig.beta). 0 (TRL's default) lets a small model
    # drift: on the demo task, GRPO at lr 5e-5 without it lost its arithmetic; 0.1 kept it.
    kl_beta: float = 0.0
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))
    category_recipes: dict[str, list[str]] | None = None
    verifier_paths: dict[str, str] = field(default_factory=dict)
    prm_path: str | None = None
    prm_aggregation: str = "min"
    # processes to train on (``launch``): None = one per GPU with CUDA, 1 without
    num_processes: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageConfig:
        """Build from a JSON-like dict (e.g. TrainingRun.config). Unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError([f"unknown setting(s): {', '.join(unknown)}"])
        missing = [n for n in ("stage", "base_model_path", "output_dir") if n not in data]
        if missing:
            raise ConfigError([f"missing required setting '{n}'" for n in missing])
        values = dict(data)
        lora = values.get("lora")
        if isinstance(lora, dict):
            lora_names = {f.name for f in dataclasses.fields(LoraSettings)}
            bad = sorted(set(lora) - lora_names)
            if bad:
                raise ConfigError([f"unknown LoRA setting(s): {', '.join(bad)}"])
            values["lora"] = LoraSettings(**lora)
        if values.get("reward_weights") is not None:
            # Unlisted terms keep their defaults, so {"length": 0} switches one term off.
            values["reward_weights"] = {**DEFAULT_REWARD_WEIGHTS, **values["reward_weights"]}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("dataset_path", "eval_dataset_path"):
            if data[key] is not None and not isinstance(data[key], str | Path):
                data[key] = repr(data[key])
        return data

    def recipes(self) -> dict[str, tuple[str, ...]]:
        if self.category_recipes is None:
            return dict(DEFAULT_CATEGORY_RECIPES)
        return {**DEFAULT_CATEGORY_RECIPES, **{k: tuple(v) for k, v in self.category_recipes.items()}}

    def validate(self) -> StageConfig:
        """Raise ConfigError listing every problem at once; returns self when the config can run."""
        problems: list[str] = []
        if self.stage not in STAGES:
            problems.append(f"unknown stage '{self.stage}' (expected one of: {', '.join(STAGES)})")
        if not self.base_model_path:
            problems.append("base_model_path is empty")
        elif not Path(self.base_model_path).exists():
            problems.append(f"base model not found at {self.base_model_path}")
        if not self.output_dir:
            problems.append("output_dir is empty")
        for name in ("dataset_path", "eval_dataset_path"):
            value = getattr(self, name)
            if value is None:
                if name == "dataset_path":
                    problems.append("dataset_path is missing")
            elif isinstance(value, str | Path) and not Path(value).exists():
                problems.append(f"{name} not found at {value}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive (got {self.learning_rate})")
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append(f"max_steps must be positive, or -1 to train by epochs (got {self.max_steps})")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            problems.append(f"num_train_epochs must be positive (got {self.num_train_epochs})")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                     "max_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.num_processes is not None and (
            isinstance(self.num_processes, bool) or not isinstance(self.num_processes, int)
            or not 1 <= self.num_processes <= MAX_PROCESSES
        ):
            problems.append(
                f"num_processes must be an integer from 1 to {MAX_PROCESSES} (got {self.num_processes!r})"
            )
        if self.lora is not None:
            if self.lora.r < 1 or self.lora.alpha < 1:
                problems.append("LoRA r and alpha must be at least 1")
            if not 0 <= self.lora.dropout < 1:
                problems.append(f"LoRA dropout must be in [0, 1) (got {self.lora.dropout})")
            if self.stage in ("verifier", "prm"):
                problems.append(
                    f"LoRA is not supported for the {self.stage} stage (its small model trains fully)"
                )
        if self.stage == "dpo" and not self.beta > 0:
            problems.append(f"DPO beta must be positive (got {self.beta})")
        if self.stage == "verifier" and self.verifier_kind not in VERIFIER_LABELS:
            problems.append(
                f"verifier_kind must be one of {', '.join(VERIFIER_LABELS)} (got {self.verifier_kind!r})"
            )
        if self.stage == "grpo":
            problems.extend(self._grpo_problems())
        if problems:
            raise ConfigError(problems)
        return self

    def _grpo_problems(self) -> list[str]:
        problems: list[str] = []
        batch = self.per_device_batch_size * self.gradient_accumulation_steps
        if self.num_generations < 2:
            problems.append(
                f"num_generations must be at least 2 (GRPO compares completions; got {self.num_generations})"
            )
        elif batch % self.num_generations:
            problems.append(
                f"num_generations ({self.num_generations}) must divide the generation batch "
                f"(per_device_batch_size x gradient_accumulation_steps = {batch})"
            )
        if self.max_completion_length < 1:
            problems.append(f"max_completion_length must be at least 1 (got {self.max_completion_length})")
        unknown = sorted(set(self.reward_weights) - set(REWARD_NAMES))
        if unknown:
            problems.append(
                f"unknown reward name(s): {', '.join(unknown)} (known: {', '.join(REWARD_NAMES)})"
            )
        negative = sorted(k for k, v in self.reward_weights.items() if v < 0)
        if negative:
            problems.append(f"reward weights must not be negative: {', '.join(negative)}")
        for category, terms in (self.category_recipes or {}).items():
            bad = sorted(set(terms) - set(REWARD_NAMES))
            if bad:
                problems.append(f"recipe for category '{category}' names unknown reward(s): {', '.join(bad)}")
        for kind, path in self.verifier_paths.items():
            if kind not in VERIFIER_LABELS:
                problems.append(
                    f"unknown verifier kind '{kind}' (expected one of: {', '.join(VERIFIER_LABELS)})"
                )
            elif not Path(path).exists():
                problems.append(f"{kind} verifier not found at {path}")
        if self.prm_path is not None and not Path(self.prm_path).exists():
            problems.append(f"PRM not found at {self.prm_path}")
        if self.reward_weights.get("prm", 0) > 0 and self.prm_path is None:
            problems.append("the 'prm' reward has a weight but no prm_path is given")
        if self.prm_aggregation not in ("min", "mean"):
            problems.append(f"prm_aggregation must be 'min' or 'mean' (got {self.prm_aggregation!r})")
        if not any(w > 0 for w in self.reward_weights.values()):
            problems.append("every reward weight is zero: GRPO would have nothing to learn from")
        return problems


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _checkpointing_field() -> str:
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def device_arguments() -> dict[str, Any]:
    """TrainingArguments fields for the device at hand (bf16 on CUDA; fp32 on CPU, see module doc)."""
    if cuda_available():
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16, "use_cpu": False, _checkpointing_field(): True}
    return {"bf16": False, "fp16": False, "use_cpu": True, _checkpointing_field(): False}


def model_dtype() -> Any:
    """dtype to load weights in: bf16 on CUDA when supported, else fp32."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
