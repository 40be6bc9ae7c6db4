"""Incremental step segmentation: each rule, split tags, unfinished think blocks, continuations."""

from __future__ import annotations

import random

import pytest

from annotator.generation.steps import ClosedStep, StepSegmenter
from trainer_worker.vocabulary.format import render_completion, render_prefix, split_completion


def run(text: str, chunks: list[int] | None = None, **kwargs) -> tuple[list[ClosedStep], str | None]:
    """Stream ``text`` through a segmenter in chunks of the given sizes (default: one char)."""
    seg = StepSegmenter(**kwargs)
    steps: list[ClosedStep] = []
    pos = 0
    sizes = iter(chunks or [])
    while pos < len(text):
        n = next(sizes, 1)
        steps += seg.feed(text[pos : pos + n])
        pos += n
    rest, answer = seg.finish()
    return steps + rest, answer


def texts(steps: list[ClosedStep]) -> list[str]:
    return [s.text for s in steps]


COMPLETION = "<think>\nFirst add 2 and 3.\n\nThat gives 5.\nDouble it: 10.\n</think>\nThe answer is 10."


def test_line_rule_emits_one_step_per_non_empty_line_as_lines_close() -> None:
    seg = StepSegmenter()
    assert seg.phase == "preamble"
    assert seg.feed("<think>\nFirst add") == []
    assert seg.phase == "think"
    assert seg.partial == "First add"
    assert seg.feed(" 2 and 3.\n") == [ClosedStep(0, "First add 2 and 3.")]
    assert seg.feed("\nThat gives 5.\nDouble") == [ClosedStep(1, "That gives 5.")]
    assert seg.feed(" it: 10.\n</think>\nThe answer") == [ClosedStep(2, "Double it: 10.")]
    assert seg.phase == "answer"
    assert seg.answer_so_far == "The answer"
    assert seg.feed(" is 10.") == []
    assert seg.finish() == ([], "The answer is 10.")


def test_any_chunking_gives_the_same_result_as_split_completion() -> None:
    expected_steps, expected_answer = split_completion(COMPLETION)
    rng = random.Random(7)
    for _ in range(20):
        chunks = [rng.randint(1, 9) for _ in range(len(COMPLETION))]
        steps, answer = run(COMPLETION, chunks)
        assert texts(steps) == expected_steps
        assert [s.index for s in steps] == [0, 1, 2]
        assert answer == expected_answer


def test_tags_split_across_deltas() -> None:
    seg = StepSegmenter()
    assert seg.feed("<th") == []
    assert seg.phase == "preamble"
    assert seg.feed("ink>\nonly step") == []
    assert seg.phase == "think"
    assert seg.feed("</th") == []
    assert seg.phase == "think"
    assert seg.feed("ink>\n42") == [ClosedStep(0, "only step")]
    assert seg.phase == "answer"
    assert seg.finish() == ([], "42")


def test_blank_line_rule_groups_lines_until_a_blank_line() -> None:
    text = "<think>\nLet x be 2.\nThen x+1 is 3.\n\n\nSo the result is 3.\n</think>\n3"
    steps, answer = run(text, rule="blank_line")
    assert texts(steps) == ["Let x be 2.\nThen x+1 is 3.", "So the result is 3."]
    assert answer == "3"


def test_numbered_rule_starts_a_step_at_each_number() -> None:
    text = "<think>\n1. Read the question.\nIt asks for 3.5 + 1.\n2) Add: 4.5\n\n10. Check it.\n</think>\n4.5"
    steps, answer = run(text, rule="numbered")
    assert texts(steps) == ["1. Read the question.\nIt asks for 3.5 + 1.", "2) Add: 4.5", "10. Check it."]
    assert answer == "4.5"


def test_unclosed_think_block_gives_no_answer_and_keeps_the_last_step() -> None:
    steps, answer = run("<think>\nStep one.\nStep two, cut off mid", [5, 5, 5, 5, 5, 5, 5, 5, 100])
    assert texts(steps) == ["Step one.", "Step two, cut off mid"]
    assert answer is None


def test_missing_open_tag_reads_like_split_completion() -> None:
    # Some chat templates put "<think>" in the prompt; the stream then starts with the steps.
    text = "Step one.\nStep two.\n</think>\nDone."
    steps, answer = run(text)
    assert (texts(steps), answer) == split_completion(text)
    no_think = "Just an answer."
    steps, answer = run(no_think)
    assert (texts(steps), answer) == split_completion(no_think)


def test_continuation_numbers_new_steps_after_the_prefix_and_does_not_repeat_it() -> None:
    prefix_steps = ["First add 2 and 3.", "That gives 6."]  # the human edited step 1
    prefix = render_prefix(prefix_steps)
    continuation = "Double it: 12.\n</think>\n12"
    steps, answer = run(continuation, [4] * 20, prefix_steps=prefix_steps)
    assert steps == [ClosedStep(2, "Double it: 12.")]
    assert answer == "12"
    # Prefix + continuation re-parse into the same trace.
    assert split_completion(prefix + continuation) == ([*prefix_steps, "Double it: 12."], "12")


def test_continuation_state_starts_in_think_phase() -> None:
    seg = StepSegmenter("numbered", prefix_steps=["1. Start."])
    assert seg.phase == "think"
    assert seg.next_index == 1
    assert seg.feed("Still part of a new step\n2. Next.\n") == [ClosedStep(1, "Still part of a new step")]
    assert seg.finish() == ([ClosedStep(2, "2. Next.")], None)


def test_rendered_completion_round_trips_through_the_default_rule() -> None:
    steps = ["a = 1", "b = a + 1", "so b = 2"]
    out, answer = run(render_completion(steps, "2"), [3] * 30)
    assert texts(out) == steps
    assert answer == "2"


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown step rule 'sentences'"):
        StepSegmenter("sentences")


def test_feed_after_finish_is_an_error() -> None:
    seg = StepSegmenter()
    seg.finish()
    with pytest.raises(RuntimeError):
        seg.feed("x")
