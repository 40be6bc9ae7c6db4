"""Each GRPO reward term by hand, and the category dispatch of make_reward_funcs."""

from __future__ import annotations

import pytest

from trainer_worker.training.rewards import (
    answer_matches,
    answer_reward,
    format_reward,
    length_efficiency,
    make_reward_funcs,
    prm_reward,
    verifier_reward,
)

GOOD = "<think>\n1. 2 + 3 = 5\n</think>\n5"


def _msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_format_reward_needs_closed_think_and_an_answer() -> None:
    completions = [
        GOOD,
        "<think>\nsteps\n</think>\n",  # no answer
        "<think>\n\n</think>\n5",  # empty think
        "steps\n</think>\n5",  # never opened
        "<think>\nsteps and no end",  # never closed
        "<think>\na\n</think>\n5 <think>again</think> 6",  # stray tags after the answer
        _msg(GOOD),  # conversational completions count too
    ]
    assert format_reward(completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_answer_matches_text_and_numbers() -> None:
    assert answer_matches("Paris.", "paris")
    assert answer_matches("The answer is 1,234.", "1234")
    assert answer_matches("5.0", "5")
    assert not answer_matches("4 or 5, I think 4", "5")  # the last number is the answer
    assert not answer_matches(None, "5")
    assert not answer_matches("Lyon", "Paris")


def test_answer_reward_checks_the_final_answer_only() -> None:
    completions = [GOOD, "<think>\n5\n</think>\n6", "<think>\n5 is it", GOOD]
    assert answer_reward(completions, reference=["5", "5", "5", None]) == [1.0, 0.0, 0.0, None]


def test_length_efficiency_rewards_shorter_correct_answers_within_a_group() -> None:
    p1, p2 = [{"role": "user", "content": "2+3?"}], [{"role": "user", "content": "4+4?"}]
    completions = [GOOD, GOOD, "<think>\nwrong\n</think>\n6", GOOD, "<think>\nno\n</think>\n9"]
    # completion_ids lengths: 4 and 8 tokens for the two correct answers to p1.
    ids = [[0] * 4, [0] * 8, [0] * 2, [0] * 10, [0] * 3]
    prompts = [p1, p1, p1, p2, p2]
    refs = ["5", "5", "5", "5", "8"]
    got = length_efficiency(completions, prompts=prompts, reference=refs, completion_ids=ids)
    # p1: shortest correct (4) gets 1, twice as long gets 0.5, wrong (even though shortest) gets 0.
    # p2: the only correct one gets 1 whatever its length; the wrong one 0.
    assert got == [1.0, 0.5, 0.0, 1.0, 0.0]


def test_length_efficiency_counts_words_without_token_ids() -> None:
    short, long = "<think>\na\n</think>\n5", "<think>\na b c\n</think>\n5"
    got = length_efficiency([short, long], prompts=["p", "p"], reference=["5", "5"])
    # "<think> a </think> 5" is 4 words, the long one 6.
    assert got == [1.0, pytest.approx(4 / 6)]


def test_verifier_reward_uses_the_verifier_of_the_category() -> None:
    seen = []

    def safety(prompt, response):
        seen.append((prompt, response))
        return 0.1

    got = verifier_reward(
        [GOOD, GOOD], scorers={"safety": safety}, prompts=["bomb?", "2+3?"], category=["safety", "value"]
    )
    assert got == [0.1, None]  # no value verifier loaded
    assert seen == [("bomb?", GOOD)]


def test_prm_reward_min_or_mean_of_step_scores() -> None:
    def steps_scorer(prompt, steps):
        assert steps == ["a", "b", "c"]
        return [0.9, 0.3, 0.6]

    text = "<think>\na\nb\nc\n</think>\n5"
    assert prm_reward([text], step_scorer=steps_scorer, prompts=["p"]) == [0.3]
    assert prm_reward([text], step_scorer=steps_scorer, aggregation="mean", prompts=["p"]) == [pytest.approx(0.6)]
    assert prm_reward(["no steps"], step_scorer=lambda p, s: [], prompts=["p"]) == [0.0]


def test_make_reward_funcs_dispatches_on_category_with_weights() -> None:
    funcs = make_reward_funcs(
        {"format": 1.0, "answer": 2.0, "verifier": 1.0, "prm": 0.5, "length": 0.5},
        verifiers={"safety": lambda p, r: 0.1, "value": lambda p, r: 1.0},
        prm=lambda p, steps: [0.8] * len(steps),
    )
    assert [f.__name__ for f in funcs] == [
        "format_reward", "answer_reward", "verifier_reward", "prm_reward", "length_reward"
    ]
    completions = [_msg(GOOD)] * 5
    kwargs = {
        "prompts": [[{"role": "user", "content": f"q{i}"}] for i in range(5)],
        "reference": [None, "5", None, None, None],
        "category": ["safety", "knowledge", "value", "general", "unlisted"],
    }
    table = [f(completions, **kwargs) for f in funcs]
    by_sample = list(zip(*table, strict=True))
    #               format answer verifier prm  length
    assert by_sample[0] == (1.0, None, 0.1, None, None)  # safety: format + safety verifier
    assert by_sample[1] == (1.0, 2.0, None, None, 0.5)  # knowledge: format + answer + length
    assert by_sample[2] == (1.0, None, 1.0, None, None)  # value: format + value verifier
    assert by_sample[3] == (1.0, None, None, 0.4, None)  # general: format + prm
    assert by_sample[4] == by_sample[3]  # unknown categories use the general recipe
    total = [sum(v for v in row if v is not None) for row in by_sample]
    assert total == [pytest.approx(x) for x in (1.1, 3.5, 2.0, 1.4, 1.4)]


def test_make_reward_funcs_leaves_out_zero_weights_and_custom_recipes() -> None:
    funcs = make_reward_funcs({"format": 1.0, "answer": 1.0, "length": 0.0}, {"safety": ["answer"]})
    assert [f.__name__ for f in funcs] == ["format_reward", "answer_reward"]
    fmt, ans = funcs
    assert fmt([GOOD], category=["safety"]) == [None]  # the custom safety recipe has no format term
    assert ans([GOOD], category=["safety"], reference=["5"]) == [1.0]
    with pytest.raises(ValueError, match="unknown reward name"):
        make_reward_funcs({"style": 1.0})
    assert fmt([GOOD], category=["knowledge"]) == [1.0]  # recipes not overridden keep their defaults
