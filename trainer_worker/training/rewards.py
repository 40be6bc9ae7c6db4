"""GRPO rewards, dispatched by the prompt's category label (M³-RL).

Each term is a TRL reward function ``f(completions, **kwargs) -> list[float | None]``: extra dataset
columns (``reference``, ``category``) and TRL's ``prompts`` / ``completion_ids`` arrive as keyword
arguments; conversational completions are lists of message dicts. ``None`` means "this term does not
apply to this completion"; TRL turns it into NaN and leaves it out of the sum and of the term's mean.

Terms:
* ``format_reward``: 1 when the completion is ``<think> steps </think> answer`` with both parts
  non-empty and no stray tags, else 0.
* ``answer_reward``: 1 when the final answer matches ``reference`` (normalised text, or the last
  number in the answer equals a numeric reference), else 0; None without a reference.
* ``verifier_reward``: a learned verifier's SafeWork score of the completion.
* ``prm_reward``: min (default) or mean of a PRM's step scores.
* ``length_efficiency`` (Safe-and-Efficient RL): within the group of completions for one prompt,
  a correct completion gets ``shortest correct length / its length`` (the shortest gets 1), a wrong
  one gets 0. Lengths are completion tokens when TRL passes ``completion_ids``, else words.

``make_reward_funcs`` weights the terms and applies each only to the categories whose recipe names it,
so the total reward of a completion is the sum of the returned functions' values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trainer_worker.training.chat import completion_text
from trainer_worker.training.config import DEFAULT_CATEGORY_RECIPES, REWARD_NAMES
from trainer_worker.vocabulary.format import THINK_CLOSE, THINK_OPEN, split_completion
from trainer_worker.vocabulary.labels import VERIFIER_LABELS

RewardFunc = Callable[..., list[float | None]]
# (prompt, response) -> score in [0, 1]
ResponseScorer = Callable[[Any, str], float]
# (prompt, steps) -> one score per step
StepScorer = Callable[[Any, list[str]], list[float]]

_FORMAT = re.compile(
    rf"^\s*{re.escape(THINK_OPEN)}(?P<think>.*?){re.escape(THINK_CLOSE)}(?P<answer>.*)$", re.DOTALL
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    value = kwargs.get(name)
    return list(value) if value is not None else [None] * n


def is_well_formed(text: str) -> bool:
    match = _FORMAT.match(text)
    if not match:
        return False
    think, answer = match["think"], match["answer"]
    if not think.strip() or not answer.strip():
        return False
    return all(tag not in part for part in (think, answer) for tag in (THINK_OPEN, THINK_CLOSE))


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    return [1.0 if is_well_formed(t) else 0.0 for t in _texts(completions)]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def answer_matches(answer: str | None, reference: str) -> bool:
    """Rule check: normalised exact match, or a numeric reference equal to the answer's last number."""
    if answer is None:
        return False
    if _normalise(answer) == _normalise(reference):
        return True
    try:
        target = float(_normalise(reference).replace(",", ""))
    except ValueError:
        return False
    numbers = _NUMBER.findall(answer.replace(",", ""))
    return bool(numbers) and math.isclose(float(numbers[-1]), target, abs_tol=1e-6)


def final_answer(text: str) -> str | None:
    """The text after ``</think>``; None when the think block never closed."""
    return split_completion(text)[1]


def answer_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    texts = _texts(completions)
    references = _column(kwargs, "reference", len(texts))
    return [
        None if ref is None else float(answer_matches(final_answer(t), str(ref)))
        for t, ref in zip(texts, references, strict=True)
    ]


def _group_key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True, default=str)


def length_efficiency(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    texts = _texts(completions)
    n = len(texts)
    correct = answer_reward(completions, **kwargs)
    ids = kwargs.get("completion_ids")
    lengths = [max(1, len(ids[i]) if ids is not None else len(t.split())) for i, t in enumerate(texts)]
    prompts = _column(kwargs, "prompts", n)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(_group_key(prompt), []).append(i)
    out: list[float | None] = [None] * n
    for members in groups.values():
        right = [i for i in members if correct[i] == 1.0]
        shortest = min((lengths[i] for i in right), default=1)
        for i in members:
            if correct[i] is None:
                continue
            out[i] = shortest / lengths[i] if correct[i] == 1.0 else 0.0
    return out


def verifier_reward(
    completions: Sequence[Any], *, scorers: Mapping[str, ResponseScorer], **kwargs: Any
) -> list[float | None]:
    """Score each completion with the verifier whose kind equals its category (safety / value /
    knowledge); None where no such verifier is loaded."""
    texts = _texts(completions)
    prompts = _column(kwargs, "prompts", len(texts))
    categories = _column(kwargs, "category", len(texts))
    out: list[float | None] = []
    for text, prompt, category in zip(texts, prompts, categories, strict=True):
        scorer = scorers.get(str(category))
        out.append(None if scorer is None else float(scorer(prompt, text)))
    return out


def prm_reward(
    completions: Sequence[Any], *, step_scorer: StepScorer, aggregation: str = "min", **kwargs: Any
) -> list[float | None]:
    """Min or mean of the PRM's step scores over the completion's think steps (0 with no steps)."""
    texts = _texts(completions)
    prompts = _column(kwargs, "prompts", len(texts))
    out: list[float | None] = []
    for text, prompt in zip(texts, prompts, strict=True):
        steps, _answer = split_completion(text)
        scores = step_scorer(prompt, steps) if steps else []
        if not scores:
            out.append(0.0)
        elif aggregation == "mean":
            out.append(sum(scores) / len(scores))
        else:
            out.append(min(scores))
    return out


def _category_of(value: Any, recipes: Mapping[str, Sequence[str]]) -> str:
    return str(value) if value is not None and str(value) in recipes else "general"


def make_reward_funcs(
    weights: Mapping[str, float],
    category_recipes: Mapping[str, Sequence[str]] | None = None,
    *,
    verifiers: Mapping[str, ResponseScorer] | None = None,
    prm: StepScorer | None = None,
    prm_aggregation: str = "min",
) -> list[RewardFunc]:
    """TRL reward functions, one per term with a positive weight, each already weighted.

    A completion's ``category`` (missing or unknown: "general") picks the recipe, the list of terms
    that apply to it; the other terms return None for it. ``verifiers`` maps a verifier kind to a
    ``(prompt, response) -> score`` callable; ``prm`` is a ``(prompt, steps) -> scores`` callable.
    """
    unknown = sorted(set(weights) - set(REWARD_NAMES))
    if unknown:
        raise ValueError(f"unknown reward name(s): {', '.join(unknown)}")
    recipes = {**DEFAULT_CATEGORY_RECIPES, **(category_recipes or {})}
    scorers = {k: v for k, v in (verifiers or {}).items() if k in VERIFIER_LABELS}

    def term(name: str, completions: Sequence[Any], kwargs: dict[str, Any]) -> list[float | None]:
        if name == "format":
            return format_reward(completions, **kwargs)
        if name == "answer":
            return answer_reward(completions, **kwargs)
        if name == "length":
            return length_efficiency(completions, **kwargs)
        if name == "verifier":
            return verifier_reward(completions, scorers=scorers, **kwargs)
        if prm is None:
            return [None] * len(completions)
        return prm_reward(completions, step_scorer=prm, aggregation=prm_aggregation, **kwargs)

    def make(name: str, weight: float) -> RewardFunc:
        def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
            categories = _column(kwargs, "category", len(completions))
            applies = [name in recipes[_category_of(c, recipes)] for c in categories]
            if not any(applies):
                return [None] * len(completions)
            values = term(name, completions, kwargs)
            return [
                None if not ok or v is None else weight * v for ok, v in zip(applies, values, strict=True)
            ]

        reward.__name__ = f"{name}_reward"
        return reward

    return [make(name, float(weights[name])) for name in REWARD_NAMES if weights.get(name, 0) > 0]
