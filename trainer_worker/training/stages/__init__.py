"""One module per training stage; each has ``build(config, args, callbacks) -> (trainer, tokenizer)``.

``args`` are the TrainingArguments fields that ``runner.run_stage`` fills for every stage (output
dir, steps, batch, logging, saving, device); a stage adds its own and picks its trainer. Modules are
imported on demand because each pulls in TRL pieces the others do not need.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainer_worker.training.config import STAGES, StageConfig


def build_trainer(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    if config.stage not in STAGES:
        raise ValueError(f"unknown stage {config.stage!r}")
    module = importlib.import_module(f"trainer_worker.training.stages.{config.stage}")
    return module.build(config, args, callbacks)
