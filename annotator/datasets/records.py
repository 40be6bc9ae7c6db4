"""Plain, read-only input records for dataset materialisation (no Django).

A selector turns ORM rows into these; ``materialise`` turns them into TRL records. Keeping the
core on plain data means the exporters can be tested, benchmarked and run in a worker without a
database.

Conventions the selector must follow:

- ``TraceRec.steps`` is the trace's FULL step list, the shared prefix of a branch included (a
  branch created by editing step k repeats steps 0..k-1 of its parent, then the human step k).
- ``answer`` is None while the think block never closed (stopped or unfinished generation).
- ids may be ints or strings; exports write them as strings so every column has one type.

The records are read-only by convention, not ``frozen``: a frozen dataclass sets each field through
``object.__setattr__``, four times the cost of a plain ``__slots__`` store, and a snapshot build
makes about six of them per record (a trace, its steps, its review), which was a tenth of its
CPU (bench/snapshot_scale.py). Nothing may change a record after the selector made it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Id = int | str


@dataclass(slots=True)
class PromptRec:
    id: Id
    messages: list[dict[str, Any]]  # chat messages; content is a string or a list of text/image parts
    images: list[str] = field(default_factory=list)  # image file paths, in order of appearance
    category: str = "general"
    reference: str | None = None


@dataclass(slots=True)
class StepLabelRec:
    annotator: str
    rating: int | None  # +1 good, 0 neutral, -1 wrong, None = unsure
    safety_tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StepRec:
    index: int
    text: str
    origin: str = "model"  # "model" or "human"
    labels: list[StepLabelRec] = field(default_factory=list)


@dataclass(slots=True)
class ReviewRec:
    annotator: str
    verdict: str | None = None  # "accept" / "reject" / None (not given)
    safety_label: str | None = None
    value_label: str | None = None
    knowledge_label: str | None = None


@dataclass(slots=True)
class TraceRec:
    id: Id
    prompt_id: Id
    steps: list[StepRec]
    answer: str | None
    parent_id: Id | None = None
    branch_step_index: int | None = None
    model_version: str | None = None
    status: str = "finished"
    reviews: list[ReviewRec] = field(default_factory=list)
    created_at: datetime | None = None
    # A reviewer's resolution: its verdict and its non-empty labels win over the reviews.
    adjudication: ReviewRec | None = None


@dataclass(slots=True)
class CorrectionRec:
    id: Id
    original_trace_id: Id
    corrected_trace_id: Id
    step_index: int
    old_text: str
    new_text: str
    author: str


@dataclass(slots=True)
class AlternativePickRec:
    """A supervisor's pick among K sampled candidates for step ``step_index`` of trace ``trace_id``:
    ``chosen`` (a candidate, or their own text) is preferred over each of ``rejected`` (the other
    candidates the model wrote, each once; never the trace's own step when the pick made a
    correction, whose own record already holds that pair)."""

    id: Id
    trace_id: Id
    step_index: int
    chosen: str
    rejected: list[str]
    author: str
    created_at: datetime | None = None


@dataclass(slots=True)
class ComparisonRec:
    id: Id
    preferred_trace_id: Id
    other_trace_id: Id
    annotator: str


def _order_key(obj: Any) -> tuple[str, str]:
    # Records come out in a fixed order whatever order the database returned rows in, so the
    # snapshot hash does not depend on query plans.
    created = getattr(obj, "created_at", None)
    return (created.isoformat() if created else "", f"{type(obj.id).__name__}:{obj.id:>20}")


class Corpus:
    """Everything one export reads, with the lookups the materialisers need."""

    def __init__(
        self,
        *,
        prompts: Iterable[PromptRec] = (),
        traces: Iterable[TraceRec] = (),
        corrections: Iterable[CorrectionRec] = (),
        comparisons: Iterable[ComparisonRec] = (),
        picks: Iterable[AlternativePickRec] = (),
        presorted: bool = False,
    ) -> None:
        # ``presorted``: the caller gives each list in ``_order_key`` order already (a chunk of a
        # corpus read in that order from the database), so it is kept as it is.
        order = list if presorted else (lambda items: sorted(items, key=_order_key))
        self.prompts: list[PromptRec] = order(prompts)
        self.traces: list[TraceRec] = order(traces)
        self.corrections: list[CorrectionRec] = order(corrections)
        self.comparisons: list[ComparisonRec] = order(comparisons)
        self.picks: list[AlternativePickRec] = order(picks)
        self._prompts = {p.id: p for p in self.prompts}
        self._traces = {t.id: t for t in self.traces}
        self._corrections_of: dict[Id, list[CorrectionRec]] = defaultdict(list)
        self._correction_into: dict[Id, CorrectionRec] = {}
        for c in self.corrections:
            self._corrections_of[c.original_trace_id].append(c)
            self._correction_into[c.corrected_trace_id] = c

    def prompt(self, prompt_id: Id) -> PromptRec | None:
        return self._prompts.get(prompt_id)

    def trace(self, trace_id: Id) -> TraceRec | None:
        return self._traces.get(trace_id)

    def corrections_of(self, trace_id: Id) -> list[CorrectionRec]:
        """Corrections whose original is ``trace_id`` (edits made on it)."""
        return self._corrections_of.get(trace_id, [])

    def correction_into(self, trace_id: Id) -> CorrectionRec | None:
        """The correction that created branch ``trace_id``, if it is a corrected branch."""
        return self._correction_into.get(trace_id)

    @property
    def has_images(self) -> bool:
        return any(p.images for p in self.prompts)
