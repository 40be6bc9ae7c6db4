"""The one place that knows how a chain of thought is written as text.

Output format: ``<think>`` steps ``</think>`` final answer. Steps are joined by a newline inside the
think block, so a rendered completion can be split back into the same steps by the default rule
(one step per non-empty line). Part of the shared vocabulary: the trainer, the generation layer and
the exporters import it.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def render_completion(steps: list[str], answer: str | None) -> str:
    """Render closed steps (and the final answer, if any) as the model's output text."""
    body = "\n".join(s.strip("\n") for s in steps)
    text = f"{THINK_OPEN}\n{body}\n" if body else f"{THINK_OPEN}\n"
    if answer is None:
        return text
    return f"{text}{THINK_CLOSE}\n{answer.strip()}"


def render_prefix(steps: list[str]) -> str:
    """Text of a partial assistant message that ends after ``steps``; the model continues from it."""
    return render_completion(steps, None)


def split_completion(text: str) -> tuple[list[str], str | None]:
    """Split a finished completion into (steps, answer) by the default rule.

    ``answer`` is None when the think block never closed.
    """
    rest = text
    if THINK_OPEN in rest:
        rest = rest.split(THINK_OPEN, 1)[1]
    if THINK_CLOSE in rest:
        think, answer = rest.split(THINK_CLOSE, 1)
        answer_text: str | None = answer.strip()
    else:
        think, answer_text = rest, None
    steps = [line.strip() for line in think.splitlines() if line.strip()]
    return steps, answer_text
