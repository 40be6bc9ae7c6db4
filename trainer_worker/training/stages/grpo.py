"""GRPO with the label-dispatched M³-RL rewards of ``trainer_worker.training.rewards``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer_worker.training.config import StageConfig
from trainer_worker.training.stages.common import (
    is_conversational,
    keep_columns,
    load_any_dataset,
    load_model,
    load_tokenizer,
    peft_config,
)

_COLUMNS = ("prompt", "reference", "category", "images")


def _prepare(source: Any) -> Any:
    dataset = keep_columns(load_any_dataset(source), _COLUMNS, required=("prompt",))
    # Reward functions read these columns for every row; absent ones mean "no reference" and
    # the "general" recipe.
    if "reference" not in dataset.column_names:
        dataset = dataset.add_column("reference", [None] * len(dataset))
    if "category" not in dataset.column_names:
        dataset = dataset.add_column("category", ["general"] * len(dataset))
    if len(dataset) and not is_conversational(dataset[0]["prompt"]):
        dataset = dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    return dataset


def verifier_scorer(path: str) -> Callable[[Any, str], float]:
    """Load a saved verifier and return its ``(prompt, response) -> SafeWork score`` callable."""
    from trainer_worker.training.stages.verifier import load_verifier, verifier_score

    model, tokenizer = load_verifier(path)
    return lambda prompt, response: verifier_score(model, tokenizer, prompt, response)


def prm_scorer(path: str) -> Callable[[Any, list[str]], list[float]]:
    """Load a saved PRM and return its ``(prompt, steps) -> step scores`` callable."""
    from trainer_worker.training.stages.prm import load_prm, prm_step_scores

    model, tokenizer = load_prm(path)
    return lambda prompt, steps: prm_step_scores(model, tokenizer, prompt, steps)


def reward_funcs_for(config: StageConfig) -> list[Any]:
    """The weighted reward terms of a GRPO run, with its learned verifiers and PRM loaded (the
    scorers live here, beside the stages they load, so ``rewards`` stays free of model loading)."""
    from trainer_worker.training.rewards import make_reward_funcs

    verifiers = {kind: verifier_scorer(path) for kind, path in config.verifier_paths.items()}
    prm = prm_scorer(config.prm_path) if config.prm_path and config.reward_weights.get("prm", 0) > 0 else None
    return make_reward_funcs(
        config.reward_weights,
        config.category_recipes,
        verifiers=verifiers,
        prm=prm,
        prm_aggregation=config.prm_aggregation,
    )


def build(config: StageConfig, args: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = load_tokenizer(config.base_model_path)
    train = _prepare(config.dataset_path)
    evald = _prepare(config.eval_dataset_path) if config.eval_dataset_path is not None else None
    grpo_args = GRPOConfig(
        **args,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.kl_beta,
    )
    model = load_model(config.base_model_path, AutoModelForCausalLM)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs_for(config),
        args=grpo_args,
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora, "CAUSAL_LM"),
        callbacks=callbacks,
    )
    return trainer, tokenizer

