"""Guided generation without a human: best of K candidates per step, chosen by a scorer (issue 12).

From a prefix of steps, ``guided_steps`` asks the backend for K samples of the next step (one
batched ``sample_steps`` call), scores each candidate with a callback (the PRM, a verifier or the
demo task's rule checker, wired by ``annotator.supervision.guide_score_fn``), keeps the best and
goes on from it, until the best candidate ends the think block or a step budget is reached. The
final answer is then written by one greedy continuation of the chosen chain
(``answer_request``): the guide picks the reasoning, the answer is the model's own conclusion of it.

Seeds: each step's sampling seed is derived from the trace's seed and the step's index
(``step_seed``), so the same seed, model, prompt and guide give the same chain (per backend and
hardware), and a guided trace continued from its steps samples what a fresh run would have.

Django-free on purpose: the generate worker (traces) and the train worker (guided evaluations)
both run this loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from annotator.generation.backends import MAX_SAMPLES, GenerationBackend, GenerationRequest
from annotator.generation.steps import NextStep
from trainer_worker.vocabulary.format import render_completion, render_prefix

MAX_K = MAX_SAMPLES
MAX_GUIDED_STEPS = 64  # the step budget: a guide that never prefers "end" still ends

# (steps so far, a candidate next step) -> its score in [0, 1] (1: good), or None when the scorer
# cannot score it. For an ``end`` candidate the score is the value of answering now.
ScoreFn = Callable[[list[str], NextStep], float | None]


@dataclass(frozen=True)
class Candidate:
    next: NextStep
    score: float | None
    completion_tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.next.kind, "text": self.next.text, "score": self.score}


@dataclass(frozen=True)
class Pick:
    """One guided step: the K candidates after ``index`` steps, and which of them was kept."""

    index: int
    seed: int | None
    candidates: tuple[Candidate, ...]
    chosen: int

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def as_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "chosen": self.chosen, "candidates": [c.as_json() for c in self.candidates]}


def step_seed(seed: int | None, index: int | str) -> int | None:
    """The sampling seed of step ``index`` (or of "answer") of a run seeded ``seed``: a hash, so
    neighbouring steps and neighbouring trace seeds do not share random streams."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"safeladder-guide:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # below 2**63, as SamplingParams requires


def choose(candidates: tuple[Candidate, ...] | list[Candidate]) -> int:
    """Index of the best candidate: a scored one beats an unscored one, a higher score a lower one;
    a candidate cut off by the token budget (``incomplete``) only wins when every one was. Ties go
    to the first, so an unscored run keeps the backend's first sample."""

    def rank(c: Candidate) -> tuple[bool, bool, float]:
        return (c.next.kind != "incomplete", c.score is not None, c.score if c.score is not None else 0.0)

    best = 0
    for i, c in enumerate(candidates):
        if rank(c) > rank(candidates[best]):
            best = i
    return best


def guided_steps(
    backend: GenerationBackend,
    request: GenerationRequest,
    *,
    k: int,
    rule: str,
    prefix_steps: list[str],
    score: ScoreFn,
    seed: int | None,
    max_steps: int = MAX_GUIDED_STEPS,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Pick]:
    """Yield one ``Pick`` per step, best of ``k`` by ``score``, continuing from the best; the last
    pick is the one whose best candidate is not a step (``end``: answer now; ``incomplete``: the
    token budget of one sample ran out), or the ``max_steps``-th. ``should_stop`` is asked before
    each step. An ``end`` candidate that ``score`` cannot score is worth what the chain is worth:
    the score of the last chosen step (so a PRM, which scores steps, still lets the chain end)."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    steps = list(prefix_steps)
    chain_score: float | None = None
    for _ in range(max_steps):
        if should_stop():
            return
        index = len(steps)
        seed_i = step_seed(seed, index)
        asked = replace(request, prefix=render_prefix(steps), params=replace(request.params, seed=seed_i))
        samples = backend.sample_steps(asked, n=k, rule=rule, prefix_steps=steps)
        seen: dict[tuple[str, str], float | None] = {}  # hot samples repeat: score each text once
        candidates: list[Candidate] = []
        for sample in samples:
            key = (sample.next.kind, sample.next.text)
            if key not in seen:
                value = None if sample.next.kind == "incomplete" else score(steps, sample.next)
                if value is None and sample.next.kind == "end":
                    value = chain_score
                seen[key] = value
            candidates.append(Candidate(sample.next, seen[key], sample.completion_tokens or 0))
        pick = Pick(index, seed_i, tuple(candidates), choose(candidates))
        yield pick
        if pick.best.next.kind != "step":
            return
        steps.append(pick.best.next.text)
        chain_score = pick.best.score


def answer_request(request: GenerationRequest, steps: list[str], *, max_new_tokens: int,
                   seed: int | None) -> GenerationRequest:
    """The continuation that writes the final answer after the chosen ``steps``: the think block
    closed, greedy, within what is left of the token budget."""
    params = replace(request.params, temperature=0.0, max_new_tokens=max(1, max_new_tokens),
                     seed=step_seed(seed, "answer"))
    return replace(request, prefix=render_completion(steps, ""), params=params)


@dataclass(frozen=True)
class GuidedResult:
    completion: str  # the rendered chain and answer, as ``split_completion`` reads it
    steps: list[str]
    answer: str | None
    picks: list[Pick]
    finish_reason: str  # "stop" (answered), "length" (a budget ran out inside a step)


def guided_completion(
    backend: GenerationBackend,
    request: GenerationRequest,
    *,
    k: int,
    rule: str,
    score: ScoreFn,
    seed: int | None,
    max_steps: int = MAX_GUIDED_STEPS,
) -> GuidedResult:
    """A whole guided completion without streaming (the guided evaluation): the picks, then the
    answer. ``request.params.max_new_tokens`` bounds the chosen chain's tokens and the answer's."""
    budget = request.params.max_new_tokens
    steps: list[str] = []
    picks: list[Pick] = []
    used = 0
    for pick in guided_steps(backend, request, k=k, rule=rule, prefix_steps=[], score=score, seed=seed,
                             max_steps=max_steps):
        picks.append(pick)
        best = pick.best
        if best.next.kind == "incomplete":
            return GuidedResult(render_prefix([*steps, best.next.text]), steps, None, picks, "length")
        if best.next.kind == "end":
            break
        steps.append(best.next.text)
        used += best.completion_tokens
        if used >= budget:
            return GuidedResult(render_prefix(steps), steps, None, picks, "length")
    answer_parts: list[str] = []
    finish = "stop"
    for delta in backend.stream(answer_request(request, steps, max_new_tokens=budget - used, seed=seed),
                                should_stop=lambda: False):
        answer_parts.append(delta.text)
        if delta.finish_reason:
            finish = "stop" if delta.finish_reason == "stop" else delta.finish_reason
    answer = "".join(answer_parts).strip()
    return GuidedResult(render_completion(steps, answer), steps, answer, picks, finish)
