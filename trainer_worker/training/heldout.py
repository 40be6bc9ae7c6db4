"""The held-out evaluation of a trained model: which prompts are held out, how an answer is
checked, and the scores (no Django; the studio turns its prompts into plain items first).

An item is a dict: ``prompt`` (chat messages), ``reference`` (or None), ``category``, ``text``
(the user turns' text) and ``klass`` (the prompt's class for per-class scores: ``metadata["klass"]``,
else the demo task's class of the text, else None). A prompt is held out when its metadata says
``split`` is "heldout" (or "eval"/"test"); a prompt without a split that is one of the demo
task's is held out by the task's own split of its text. Other prompts may be in the training data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer_worker.training import demo_task
from trainer_worker.training.rewards import answer_matches

HELDOUT_SPLITS = ("heldout", "eval", "test")


def user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the user turns (string contents only)."""
    return "\n".join(m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str))


def _is_demo(text: str) -> bool:
    try:
        demo_task.solve(text)
    except ValueError:
        return False
    return True


def heldout_item(
    messages: list[dict[str, Any]], *, metadata: dict[str, Any] | None, reference: str | None, category: str
) -> dict[str, Any] | None:
    """The evaluation item of a prompt, or None when the prompt is not held out."""
    text = user_text(messages)
    split = (metadata or {}).get("split")
    if split is None:
        if not _is_demo(text):
            return None
        split = demo_task.split_of(text)
    if split not in HELDOUT_SPLITS:
        return None
    klass = (metadata or {}).get("klass")
    if not isinstance(klass, str) or not klass:
        klass = demo_task.klass_of(text)
    return {"prompt": messages, "reference": reference or None, "category": category, "text": text,
            "klass": klass}


def answer_right(text: str, answer: str | None, reference: str | None) -> bool | None:
    """Whether ``answer`` is right against the prompt's reference: the demo task's checker for its
    prompts (``text`` is the user turns' text), the reference rule check (``answer_matches``) for the
    others; None when there is nothing to check it against (not the task's, no reference)."""
    try:
        return demo_task.check_answer(text, answer)
    except ValueError:
        return answer_matches(answer, reference) if reference else None


def answer_checker(items: list[dict[str, Any]]) -> Callable[[Any, str | None], bool]:
    """The demo task's checker for its prompts; the reference rule check for the others."""
    by_key = {repr(item["prompt"]): item for item in items}

    def check(prompt: Any, answer: str | None) -> bool:
        item = by_key[repr(prompt)]
        return bool(answer_right(item["text"], answer, item["reference"]))

    return check


def safety_scorer(items: list[dict[str, Any]]) -> Callable[[Any, str], float]:
    """1 for the right behaviour on the demo task's requests (refuse the unsafe ones, answer the
    benign look-alikes: an unnecessary refusal is not safe), the default refusal score otherwise."""
    from trainer_worker.training.evaluate import default_safety_score
    from trainer_worker.vocabulary.format import split_completion

    by_key = {repr(item["prompt"]): item for item in items}

    def score(prompt: Any, completion: str) -> float:
        item = by_key[repr(prompt)]
        if demo_task.klass_of(item["text"]) is None:
            return default_safety_score(completion)
        _steps, answer = split_completion(completion)
        return 1.0 if demo_task.check_answer(item["text"], answer) else 0.0

    return score


def _checkable(items: list[dict[str, Any]]) -> None:
    for item in items:
        # evaluate_model counts a "knowledge" prompt as verifiable when a checker is given; one with
        # neither a reference nor a demo-task solution cannot be checked, so it is not counted.
        if not _is_demo(item["text"]) and item["reference"] is None and item["category"] == "knowledge":
            item["category"] = "general"


def evaluate_heldout(model_path: str, items: list[dict[str, Any]], *, max_new_tokens: int,
                     batch_size: int = 8) -> dict[str, Any]:
    """``evaluate_model``'s scores of the model at ``model_path`` on ``items`` (per class too)."""
    from trainer_worker.training.evaluate import evaluate_model

    _checkable(items)
    return evaluate_model(model_path, items, max_new_tokens=max_new_tokens, check_answer=answer_checker(items),
                          safety_scorer=safety_scorer(items), batch_size=batch_size)


def score_heldout(model_path: str, items: list[dict[str, Any]], completions: list[str]) -> dict[str, Any]:
    """The same scores as ``evaluate_heldout`` for completions written another way (guided
    generation); the model's tokenizer counts the chain-of-thought tokens."""
    from pathlib import Path

    from trainer_worker.training.evaluate import score_completions
    from trainer_worker.training.stages.common import load_tokenizer

    _checkable(items)
    return score_completions(items, completions, load_tokenizer(Path(model_path)),
                             check_answer=answer_checker(items), safety_scorer=safety_scorer(items))
