"""Incremental step segmentation of a streamed chain of thought.

The generate worker feeds text deltas as they arrive; a step is reported (and persisted) the moment it
closes, not when generation ends. Tags can be split across deltas ("</th" + "ink>"): the segmenter only
acts on complete tags and complete lines, so partial text simply waits in a buffer.

Text before ``<think>`` is dropped and a completion that never opens a think block is all think, the
same reading as ``trainer_worker.vocabulary.format.split_completion``, so a live trace and a re-parsed
finished one agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from trainer_worker.vocabulary.format import THINK_CLOSE, THINK_OPEN
from trainer_worker.vocabulary.steps import STEP_RULES

RULES = tuple(STEP_RULES)
Phase = Literal["preamble", "think", "answer"]

# "3. text", "3) text", "12." alone on a line; not "3.5 apples" (a digit right after the dot).
_NUMBERED = re.compile(r"^\s*\d+[.)](\s|$)")


@dataclass(frozen=True)
class ClosedStep:
    index: int
    text: str


class StepSegmenter:
    """Turn streamed text into closed steps plus the final answer.

    ``rule``: "line" (one step per non-empty line), "blank_line" (steps separated by blank lines) or
    "numbered" (a step starts at a line beginning with ``N.`` or ``N)``; other lines belong to it).

    ``prefix_steps``: steps already in the assistant message (a continuation from a human-edited
    prefix rendered by ``format.render_prefix``). The stream then starts inside the think block, the
    prefix is not re-emitted, and new steps are numbered after it.
    """

    def __init__(self, rule: str = "line", *, prefix_steps: Sequence[str] = ()) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown step rule {rule!r}; expected one of {', '.join(RULES)}")
        self.rule = rule
        self._next_index = len(prefix_steps)
        # A rendered prefix always contains the opening tag, so a continuation starts thinking.
        self._phase: Phase = "think" if prefix_steps else "preamble"
        self._buf = ""  # unprocessed text of the current phase (incomplete line, partial tag)
        self._lines: list[str] = []  # lines of the open step (blank_line / numbered rules)
        self._answer = ""
        self._finished = False

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def partial(self) -> str:
        """Text of the step still open (what a viewer sees being written)."""
        if self._phase == "answer":
            return ""
        return "\n".join([*self._lines, self._buf]).strip()

    @property
    def answer_so_far(self) -> str:
        return self._answer.lstrip()

    @property
    def next_index(self) -> int:
        """Index the next closed step will get."""
        return self._next_index

    def feed(self, delta: str) -> list[ClosedStep]:
        """Consume one streamed delta; return the steps it closed (possibly none)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        closed: list[ClosedStep] = []
        if self._phase == "answer":
            self._answer += delta
            return closed
        self._buf += delta
        if self._phase == "preamble":
            if THINK_OPEN in self._buf:
                self._buf = self._buf.split(THINK_OPEN, 1)[1]
                self._phase = "think"
            elif THINK_CLOSE in self._buf:
                # The model skipped the opening tag (some templates put it in the prompt):
                # everything so far was thinking.
                self._phase = "think"
            else:
                return closed
        if THINK_CLOSE in self._buf:
            think, after = self._buf.split(THINK_CLOSE, 1)
            self._buf = ""
            closed += self._take_lines(think.split("\n"))
            closed += self._close_open_step()
            self._phase = "answer"
            self._answer = after
            return closed
        if "\n" in self._buf:
            *complete, self._buf = self._buf.split("\n")
            closed += self._take_lines(complete)
        return closed

    def finish(self) -> tuple[list[ClosedStep], str | None]:
        """End of stream: close what is open; return (last steps, answer or None if no ``</think>``)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        if self._phase == "answer":
            return [], self._answer.strip()
        rest, self._buf = self._buf, ""
        closed = self._take_lines(rest.split("\n"))
        closed += self._close_open_step()
        return closed, None

    def _emit(self, text: str) -> ClosedStep:
        step = ClosedStep(index=self._next_index, text=text)
        self._next_index += 1
        return step

    def _close_open_step(self) -> list[ClosedStep]:
        text = "\n".join(self._lines).strip()
        self._lines = []
        return [self._emit(text)] if text else []

    def _take_lines(self, lines: list[str]) -> list[ClosedStep]:
        closed: list[ClosedStep] = []
        for raw in lines:
            line = raw.rstrip("\r")
            blank = not line.strip()
            if self.rule == "line":
                if not blank:
                    closed.append(self._emit(line.strip()))
            elif self.rule == "blank_line":
                if blank:
                    closed += self._close_open_step()
                else:
                    self._lines.append(line.strip())
            else:  # numbered
                if blank:
                    continue
                if _NUMBERED.match(line):
                    closed += self._close_open_step()
                self._lines.append(line.strip())
        return closed


# --- one next step (alternatives, guided generation) ----------------------------------------------

CandidateKind = Literal["step", "end", "incomplete"]


@dataclass(frozen=True)
class NextStep:
    """What a sample continued a prefix with, read up to the step boundary: ``step`` (one closed
    step, ``text``), ``end`` (the model closed the think block instead: it would answer now) or
    ``incomplete`` (the token budget ran out inside the step; ``text`` is what it wrote)."""

    kind: CandidateKind
    text: str


def next_step(rule: str, prefix_steps: Sequence[str], text: str, *, complete: bool) -> NextStep:
    """Read ``text`` (what the model wrote after the rendered prefix) up to the first step boundary.
    ``complete``: the sample ended (end of sequence, a stop string, the budget), so an open step
    closes; otherwise (a stream still running) an open step is ``incomplete`` and the caller may
    wait for more. Newlines inside a step (rules that allow several lines) become spaces: a step
    is one line when it is stored, as a human correction is."""
    segmenter = StepSegmenter(rule, prefix_steps=prefix_steps)
    if not prefix_steps:
        segmenter.feed(THINK_OPEN + "\n")  # the rendered empty prefix: the sample starts inside the think block
    closed = segmenter.feed(text)
    if not closed and segmenter.phase != "answer" and complete:
        closed, answer = segmenter.finish()
        if not closed and answer is not None:
            return NextStep("end", "")
    if closed:
        return NextStep("step", " ".join(closed[0].text.split()))
    if segmenter.phase == "answer":
        return NextStep("end", "")
    return NextStep("incomplete", " ".join(segmenter.partial.split()))


def boundary_stop_strings(rule: str) -> list[str]:
    """Stop strings that end a sample at the next step boundary on a server that only knows strings
    (vLLM). ``next_step`` reads the text afterwards, so a stop string only needs to come at or after
    the boundary, never before it."""
    stops = {"line": ["\n"], "blank_line": ["\n\n"]}.get(rule)
    if stops is None:  # numbered: the next numbered line begins ("\n3." or "\n3)")
        stops = [f"\n{n}{mark}" for n in range(1, 100) for mark in ".)"]
    return [*stops, THINK_CLOSE]
