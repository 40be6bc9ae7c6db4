"""The guided decoding loop (annotator/generation/guided.py) on a real tiny model that learned two
chains for one prompt, the wrong one more often (tests/support/models.py build_two_minded_lm)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from annotator.generation.backends import GenerationRequest, SamplingParams
from annotator.generation.guided import Candidate, choose, guided_completion, step_seed
from annotator.generation.local import LocalBackend, evict
from annotator.generation.steps import NextStep
from annotator.supervision import guide_score_fn
from tests.support.models import RIGHT_STEPS, SCRIPT_STEPS, build_two_minded_lm

PROMPT = [{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}]


@pytest.fixture(scope="module")
def two_minded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_two_minded_lm(tmp_path_factory.mktemp("guided") / "lm")
    yield path
    evict(path)
    torch.set_num_threads(before)


def _run(path: Path, *, k: int, seed: int, temperature: float = 1.0):
    request = GenerationRequest(messages=PROMPT, params=SamplingParams(temperature=temperature, max_new_tokens=96))
    return guided_completion(LocalBackend(path, device="cpu"), request, k=k, rule="line",
                             score=guide_score_fn("rule:demo_task", PROMPT), seed=seed)


def test_best_of_8_by_the_rule_checker_finds_the_right_chain_that_greedy_misses(two_minded):
    greedy = _run(two_minded, k=1, seed=0, temperature=0)
    assert greedy.steps == SCRIPT_STEPS and greedy.answer == "44"
    for seed in (0, 1, 2):
        guided = _run(two_minded, k=8, seed=seed)
        assert guided.steps == RIGHT_STEPS and guided.answer == "45", (seed, guided.steps, guided.answer)
        # It ended because ending the complete chain was the best candidate, not at the step budget.
        assert guided.picks[-1].best.next.kind == "end" and guided.picks[-1].best.score == 1.0
        assert guided.completion.endswith("</think>\n45")


def test_the_same_seed_gives_the_same_guided_chain_and_each_step_its_own_seed(two_minded):
    first, again = _run(two_minded, k=4, seed=7), _run(two_minded, k=4, seed=7)
    assert [p.candidates for p in first.picks] == [p.candidates for p in again.picks]
    assert [p.seed for p in first.picks] == [step_seed(7, i) for i in range(len(first.picks))]
    assert len({p.seed for p in first.picks}) == len(first.picks)


def test_ties_go_to_the_first_and_a_scored_or_complete_candidate_beats_the_others():
    step = NextStep("step", "a")
    assert choose([Candidate(step, 0.5), Candidate(step, 0.5), Candidate(step, 0.2)]) == 0
    assert choose([Candidate(step, None), Candidate(step, 0.0)]) == 1
    assert choose([Candidate(NextStep("incomplete", "a b"), None), Candidate(step, 0.1)]) == 1
    assert choose([Candidate(step, 0.4), Candidate(NextStep("end", ""), 0.9)]) == 1
    assert step_seed(None, 3) is None and 0 <= step_seed(2**62, 99) < 2**63
