"""Run one training stage from a plain ``StageConfig``: the single entry point of the trainer workers.

The Celery task (or any script, or ``accelerate launch``; see ``config``) calls ``run_stage`` and
gets progress through plain callables, so nothing here knows about Django.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_worker.training.config import StageConfig, device_arguments

FINAL_DIR = "final"


@dataclass
class StageResult:
    output_path: Path | None  # output_dir/final; None when cancelled
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    train_tokens: int = 0  # tokens fed to the model in this session (non-padding; GRPO: prompt+completion)
    train_seconds: float = 0.0


def _numeric(logs: dict[str, Any]) -> dict[str, float]:
    # NaN (a reward term that applied to no completion) is dropped: it is not JSON and means "no value".
    return {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (a no-op in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _bridge_callback(
    on_metrics: Callable[[int, dict[str, float]], None] | None,
    should_stop: Callable[[], bool] | None,
) -> Any:
    from transformers import TrainerCallback

    class Bridge(TrainerCallback):
        """Forwards logged metrics and turns ``should_stop`` into a stop after the current step."""

        def __init__(self) -> None:
            self.cancelled = False
            self.start_tokens = 0
            self.last_metrics: dict[str, float] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # On resume the state (and its token count) was already loaded from the checkpoint.
            self.start_tokens = int(state.num_input_tokens_seen or 0)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            values = _numeric(logs or {})
            self.last_metrics.update(values)
            if on_metrics is not None and state.is_world_process_zero and values:
                on_metrics(int(state.global_step), values)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if should_stop is None or state.global_step >= state.max_steps:
                return
            if _any_rank(bool(should_stop())):
                self.cancelled = True
                control.should_training_stop = True

    return Bridge()


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder that was saved to the end, or None.

    The Trainer writes ``trainer_state.json`` last (after the weights, optimizer, scheduler and RNG
    state), so a folder without it belongs to a worker that died while saving: resuming from it
    fails, and the one before it holds everything.
    """
    complete = [
        path for path in output_dir.glob("checkpoint-*")
        if path.name.removeprefix("checkpoint-").isdigit() and (path / "trainer_state.json").is_file()
    ]
    if not complete:
        return None
    return str(max(complete, key=lambda path: int(path.name.removeprefix("checkpoint-"))))


def training_arguments(config: StageConfig) -> dict[str, Any]:
    """TrainingArguments fields shared by every stage."""
    has_eval = config.eval_dataset_path is not None
    return {
        "output_dir": str(config.output_dir),
        "learning_rate": config.learning_rate,
        "max_steps": config.max_steps,
        "num_train_epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_batch_size,
        "per_device_eval_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "logging_strategy": "steps",
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": config.save_steps if has_eval else None,
        "seed": config.seed,
        "report_to": "none",
        "disable_tqdm": True,
        # GRPO counts prompt and completion tokens itself; the others count non-padding inputs.
        "include_num_input_tokens_seen": "no" if config.stage == "grpo" else "non_padding",
        **device_arguments(),
    }


def run_stage(
    config: StageConfig,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> StageResult:
    """Train ``config.stage`` and save the result to ``output_dir/final`` (model or LoRA adapter,
    plus the tokenizer).

    * ``on_metrics(step, metrics)`` is called at every logging step (loss, learning rate, stage
      metrics such as DPO's reward margins or GRPO's per-term rewards) from the main process.
    * ``on_log(line)`` receives short human-readable progress lines.
    * ``should_stop()`` is checked after every optimizer step; when it returns True training stops
      after that step and the result has ``cancelled=True`` and ``output_path=None``. What is left on
      disk then: the checkpoints already saved (``output_dir/checkpoint-N``, every ``save_steps``)
      and no ``final`` folder; a later ``resume=True`` run continues from the last checkpoint.
    * Checkpoints go to ``output_dir/checkpoint-N`` every ``save_steps`` (and at the last step);
      ``resume=True`` continues from the newest complete one if there is any (a worker that died;
      see ``last_complete_checkpoint``), keeping the
      optimizer, scheduler and step count, so the run still ends at ``max_steps``.
    """
    from transformers.trainer_callback import PrinterCallback

    from trainer_worker.training.stages import build_trainer

    def log(line: str) -> None:
        if on_log is not None:
            on_log(line)

    config.validate()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None

    log(f"Preparing {config.stage} from {config.base_model_path}")
    bridge = _bridge_callback(on_metrics, should_stop)
    trainer, tokenizer = build_trainer(config, training_arguments(config), [bridge])
    # The worker streams metrics through on_metrics; printing every log dict to stdout is noise.
    trainer.remove_callback(PrinterCallback)
    if checkpoint:
        log(f"Resuming from {Path(checkpoint).name}")
    log(f"Training ({'LoRA' if config.lora else 'full'}, max_steps={config.max_steps})")

    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.monotonic() - started
    state = trainer.state
    metrics = {**bridge.last_metrics, **_numeric(output.metrics or {})}
    tokens = int(state.num_input_tokens_seen or 0) - bridge.start_tokens

    if bridge.cancelled:
        log(f"Cancelled after step {state.global_step}")
        return StageResult(None, int(state.global_step), metrics, True, tokens, seconds)

    final = output_dir / FINAL_DIR
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final))
    log(f"Saved {'adapter' if config.lora else 'model'} to {final}")
    return StageResult(final, int(state.global_step), metrics, False, tokens, seconds)
