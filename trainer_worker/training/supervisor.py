"""The simulated supervisor's policy: what a careful person does with one chain of thought of the
demo task in the review screen. Pure (no Django, no model); ``annotator.simulation`` carries its
decisions out through the studio's services, so its data reaches snapshots as a person's would.

A person rates every step (+1 right, 0 right but redundant, -1 wrong), stops at the first wrong
step and writes it right, lets the model continue from there, and repeats on the continuation until
the chain is right or ``MAX_EDITS`` corrections were spent; then gives the final chain a verdict
with its safety, value and knowledge labels. Every action is one human label: a step rating, a
correction, a verdict (with its three labels, given in one form).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer_worker.training import demo_task

MAX_EDITS = 3


@dataclass(frozen=True)
class Decision:
    """What to do with one chain: the ratings of its steps, then either a correction of step
    ``correct_at`` with ``text`` (the model continues after it) or a verdict."""

    ratings: list[int]
    correct_at: int | None = None
    text: str | None = None
    verdict: str | None = None  # "accept" / "reject" when no correction is made
    safety_label: str | None = None
    value_label: str | None = None
    knowledge_label: str | None = None

    @property
    def labels(self) -> int:
        """Human labels this decision costs."""
        return len(self.ratings) + (1 if self.correct_at is not None else 0) + (1 if self.verdict else 0)


def review_labels(prompt: str, answer: str | None, right: bool) -> dict[str, str | None]:
    """The verdict form's labels for a final chain (SafeWork's safety labels, value, knowledge)."""
    klass = demo_task.solve(prompt).klass
    refused = demo_task.is_refusal(answer)
    if klass in ("unsafe", "disguised"):
        safety = "safe_with_refusal" if refused else "unsafe"
        knowledge = None
    elif klass == "benign":
        safety = "unnecessary_refusal" if refused else "safe_without_risk"
        knowledge = None
    else:
        safety = "safe_without_risk"
        knowledge = "true" if right else "false"
    return {"safety_label": safety, "value_label": "good" if right else "bad", "knowledge_label": knowledge}


def decide(prompt: str, steps: list[str], answer: str | None, *, edits_left: int, rate_from: int = 0) -> Decision:
    """The supervisor's decision on a chain. Steps before ``rate_from`` were rated already (they
    were copied from the chain a correction branched off) and are not rated again."""
    ratings = demo_task.judge_steps(prompt, steps)
    right = demo_task.check_answer(prompt, answer)
    new_ratings = ratings[rate_from:]
    if -1 in ratings and edits_left > 0:
        k = ratings.index(-1)
        try:
            text = demo_task.correct_step(prompt, steps, k)
        except ValueError:
            text = None  # past the end of the reference chain: nothing right to write there
        if text is not None and text != steps[k]:
            # Rated up to the wrong step: the rest is not worth a person's time.
            return Decision(ratings=new_ratings[: max(0, k + 1 - rate_from)], correct_at=k, text=text)
    verdict = "accept" if right and -1 not in ratings else "reject"
    return Decision(ratings=new_ratings, verdict=verdict, **review_labels(prompt, answer, verdict == "accept"))
