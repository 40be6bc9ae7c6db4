"""ORM rows → a plain ``Corpus`` (records.py) for one export, with the user's filters.

The dataset core (materialise, writers) never sees Django; this module is the one adapter. It
reads with a fixed number of queries whatever the corpus size (no N+1): prompts, images, traces,
reviews, step labels, steps, corrections, comparisons — each one ``values_list`` query, the big
ones (steps, labels) streamed from a server-side cursor in chunks so that no query result is
held twice in memory.

Filters (``CorpusFilter``; JSON shape in docs/datasets.md "Snapshots"):

- ``categories``: prompt categories to keep;
- ``created_from`` / ``created_to``: traces created in that range, both ends inclusive (a bare
  date for ``created_to`` covers that whole day); for ``rl_prompts`` the range applies to prompts;
- ``model_versions``: ids of the generating model versions (traces of other models are left out);
- ``annotators``: usernames whose judgements count — other people's step labels, reviews,
  corrections and comparisons are left out (the traces stay);
- ``review_status``: ``accepted`` / ``rejected`` keeps only traces with that verdict (after the
  annotator filter; verdict rules as in docs/datasets.md), ``any`` keeps all. Pair kinds need both
  sides: with ``accepted`` a correction pair loses its (usually rejected) original;
- ``images``: None (default) / False / True, passed to ``materialise``;
- ``adjudicated_only``: keep only what a reviewer resolved: adjudicated traces, and the traces of
  approved corrections (with their corrections); pending corrections are left out;
- ``redundant_steps``: ``keep`` (default) / ``drop`` / ``exclude``, passed to ``materialise``:
  what the SFT kinds do with steps rated 0 (correct but redundant).

Held-out prompts (``metadata["split"]`` in ``HELDOUT_SPLITS``: the trained model is evaluated on
them) are never read, whatever the filter and the kind; a prompt without a ``split`` is not held
out here.

Adjudications always win over the reviews (``TraceRec.adjudication``), and corrections a reviewer
rejected never become training data, with or without ``adjudicated_only``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import connection, connections
from django.db.models import BooleanField, F, Func, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from annotator.datasets.materialise import REDUNDANT_STEPS
from annotator.datasets.records import (
    AlternativePickRec,
    ComparisonRec,
    Corpus,
    CorrectionRec,
    PromptRec,
    ReviewRec,
    StepLabelRec,
    StepRec,
    TraceRec,
    _order_key,
)
from annotator.errors import InvalidInput
from annotator.models import (
    Adjudication,
    AlternativeSet,
    Category,
    Comparison,
    Correction,
    CorrectionStatus,
    ModelVersion,
    Project,
    Prompt,
    PromptImage,
    Step,
    StepLabel,
    Trace,
    TraceReview,
)
from trainer_worker.training.heldout import HELDOUT_SPLITS

REVIEW_STATUSES = ("any", "accepted", "rejected")
FILTER_KEYS = (
    "categories", "created_from", "created_to", "model_versions", "annotators", "review_status", "images",
    "adjudicated_only", "redundant_steps",
)
CHUNK = 10_000  # rows per server-side cursor fetch, and traces per chunk of a snapshot build


@dataclass(frozen=True)
class CorpusFilter:
    categories: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None  # inclusive
    model_versions: tuple[int, ...] = ()
    annotators: tuple[str, ...] = ()
    review_status: str = "any"
    images: bool | None = None
    adjudicated_only: bool = False
    redundant_steps: str = "keep"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CorpusFilter:
        """Check the shape and types of a filter mapping; raise InvalidInput naming the problem."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput("filters must be an object.", code="bad_filter")
        unknown = sorted(set(data) - set(FILTER_KEYS))
        if unknown:
            # A misspelt filter must not silently export everything.
            raise InvalidInput(
                f"Unknown filter(s): {', '.join(unknown)}. Known: {', '.join(FILTER_KEYS)}.", code="bad_filter"
            )
        categories = _str_list(data.get("categories"), "categories")
        bad = sorted(set(categories) - set(Category.values))
        if bad:
            raise InvalidInput(
                f"Unknown categor(y/ies): {', '.join(bad)}. Known: {', '.join(Category.values)}.", code="bad_filter"
            )
        versions = data.get("model_versions") or []
        if not isinstance(versions, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in versions
        ):
            raise InvalidInput("model_versions must be a list of model version ids (integers).", code="bad_filter")
        status = data.get("review_status") or "any"
        if status not in REVIEW_STATUSES:
            raise InvalidInput(f"review_status must be one of {', '.join(REVIEW_STATUSES)}.", code="bad_filter")
        images = data.get("images")
        if images is not None and not isinstance(images, bool):
            raise InvalidInput("images must be true, false or null.", code="bad_filter")
        adjudicated_only = data.get("adjudicated_only", False)
        if not isinstance(adjudicated_only, bool):
            raise InvalidInput("adjudicated_only must be true or false.", code="bad_filter")
        redundant = data.get("redundant_steps")
        redundant = "keep" if redundant is None else redundant
        if not isinstance(redundant, str) or redundant not in REDUNDANT_STEPS:
            raise InvalidInput(
                f"redundant_steps must be one of {', '.join(REDUNDANT_STEPS)}, not {redundant!r}.", code="bad_filter"
            )
        start = _when(data.get("created_from"), "created_from", end_of_day=False)
        end = _when(data.get("created_to"), "created_to", end_of_day=True)
        if start and end and start > end:
            raise InvalidInput("created_from is after created_to: the range is empty.", code="bad_filter")
        return cls(
            categories=tuple(sorted(set(categories))),
            created_from=start,
            created_to=end,
            model_versions=tuple(sorted(set(versions))),
            annotators=tuple(sorted(set(_str_list(data.get("annotators"), "annotators")))),
            review_status=status,
            images=images,
            adjudicated_only=adjudicated_only,
            redundant_steps=redundant,
        )

    def check_against(self, project: Project) -> None:
        """Ids and names must exist: a filter on a model or a person who is not there is a mistake."""
        if self.model_versions:
            found = set(
                ModelVersion.objects.filter(project=project, pk__in=self.model_versions).values_list("pk", flat=True)
            )
            missing = [str(v) for v in self.model_versions if v not in found]
            if missing:
                raise InvalidInput(
                    f"Model version(s) {', '.join(missing)} are not in this project.", code="bad_filter"
                )
        if self.annotators:
            found = set(
                get_user_model().objects.filter(username__in=self.annotators).values_list("username", flat=True)
            )
            missing = [a for a in self.annotators if a not in found]
            if missing:
                raise InvalidInput(f"Unknown annotator(s): {', '.join(missing)}.", code="bad_filter")

    def as_json(self) -> dict[str, Any]:
        """The normalised filter as stored on the snapshot (only what is set)."""
        out: dict[str, Any] = {}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.created_from:
            out["created_from"] = self.created_from.isoformat()
        if self.created_to:
            out["created_to"] = self.created_to.isoformat()
        if self.model_versions:
            out["model_versions"] = list(self.model_versions)
        if self.annotators:
            out["annotators"] = list(self.annotators)
        if self.review_status != "any":
            out["review_status"] = self.review_status
        if self.images is not None:
            out["images"] = self.images
        if self.adjudicated_only:
            out["adjudicated_only"] = True
        if self.redundant_steps != "keep":
            out["redundant_steps"] = self.redundant_steps
        return out


def _str_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{name} must be a list of non-empty strings.", code="bad_filter")
    return list(value)


def _when(value: Any, name: str, *, end_of_day: bool) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time.max if end_of_day else time.min)
    elif isinstance(value, str):
        try:
            moment = parse_datetime(value) if "T" in value or " " in value else None
            day = None if moment else parse_date(value)
        except ValueError:
            moment = day = None
        if moment is None and day is None:
            raise InvalidInput(f"{name} must be an ISO 8601 date or date-time, not {value!r}.", code="bad_filter")
        if moment is None:
            # A bare end date means "up to the end of that day", which is what people mean by it.
            moment = datetime.combine(day, time.max if end_of_day else time.min)
    else:
        raise InvalidInput(f"{name} must be an ISO 8601 date or date-time string.", code="bad_filter")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment


def _none_if_blank(value: str) -> str | None:
    return value or None


def _verdict(reviews: list[ReviewRec], adjudication: ReviewRec | None = None) -> str | None:
    if adjudication is not None and adjudication.verdict:
        return adjudication.verdict
    verdicts = {r.verdict for r in reviews if r.verdict}
    return verdicts.pop() if len(verdicts) == 1 else None


def _training_prompts(project: Project) -> QuerySet[Prompt]:
    """The project's prompts that may become training data: all but the held-out ones.

    The held-out set is selected positively and excluded by id: a negated JSON key lookup
    (``NOT metadata->'split' IN (…)``) is NULL, so it would drop the prompts without a split too.
    """
    heldout = Prompt.objects.filter(project=project, metadata__split__in=HELDOUT_SPLITS)
    return Prompt.objects.filter(project=project).exclude(pk__in=heldout.values("pk"))


def _traces(project: Project, f: CorpusFilter) -> QuerySet[Trace]:
    qs = Trace.objects.filter(project=project, prompt__in=_training_prompts(project))
    if f.categories:
        qs = qs.filter(prompt__category__in=f.categories)
    if f.created_from:
        qs = qs.filter(created_at__gte=f.created_from)
    if f.created_to:
        qs = qs.filter(created_at__lte=f.created_to)
    if f.model_versions:
        qs = qs.filter(model_version_id__in=f.model_versions)
    if f.adjudicated_only:
        approved = Correction.objects.filter(status=CorrectionStatus.APPROVED)
        qs = qs.filter(
            Q(adjudication__isnull=False)
            | Q(pk__in=approved.values("original_trace_id"))
            | Q(pk__in=approved.values("corrected_trace_id"))
        )
    return qs


def _by_annotator(qs: QuerySet, field: str, f: CorpusFilter) -> QuerySet:
    return qs.filter(**{f"{field}__username__in": f.annotators}) if f.annotators else qs


_PROMPT_FIELDS = ("pk", "messages", "category", "reference_answer")


def _prompt_recs(prompts: QuerySet[Prompt]) -> list[PromptRec]:
    # The images by a subquery, not an IN list of up to 100k ids.
    return _prompt_recs_of(list(prompts.values_list(*_PROMPT_FIELDS)), PromptImage.objects.filter(prompt__in=prompts))


def _prompt_recs_of(
    rows: list[tuple[Any, ...]], images_qs: QuerySet[PromptImage] | None = None, ids: _Ids | None = None
) -> list[PromptRec]:
    """PromptRecs of prompt rows (``_PROMPT_FIELDS``), in their order; ``images_qs`` selects their
    images (default: by ``ids``, the rows' ids)."""
    images: dict[int, list[str]] = defaultdict(list)
    if images_qs is None and rows:
        images_qs = PromptImage.objects.filter(_AnyOf("prompt_id", ids or _Ids(row[0] for row in rows)))
    if images_qs is not None:
        for prompt_id, name in images_qs.order_by("prompt_id", "position").values_list("prompt_id", "file"):
            images[prompt_id].append(default_storage.path(name))
    # PromptRec's fields in order: id, messages, images, category, reference.
    return [
        PromptRec(pk, messages, images.get(pk) or [], category, reference or None)
        for pk, messages, category, reference in rows
    ]


_scan_json = json.JSONDecoder().scan_once


def _json_of(text: str | None) -> Any:
    """What ``JSONField.from_db_value`` makes of a jsonb value, for one read as text (see
    ``_prompt_rows``): ``json.loads``, without its two whitespace regexes around the value, since
    PostgreSQL writes a jsonb value's text without any. Anything else goes the field's own way."""
    if text is None:
        return None
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, json.JSONDecodeError):
        end = -1
    if end == len(text):
        return value
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # as JSONField.from_db_value


def _prompt_rows(prompts: QuerySet[Prompt]) -> list[tuple[Any, ...]]:
    """``prompts.values_list(*_PROMPT_FIELDS)``, with ``messages`` decoded by ``_json_of``, not by
    Django's JSON converter (with positional PromptRecs, 1.24 -> 1.14 s of CPU to read 100k)."""
    return [
        (pk, _json_of(messages), category, reference)
        for pk, messages, category, reference in prompts.values_list(
            "pk", Cast("messages", output_field=TextField()), "category", "reference_answer"
        )
    ]


def _rl_prompts(project: Project, f: CorpusFilter) -> QuerySet[Prompt]:
    """The prompts of an ``rl_prompts`` export: no trace is read, and the date range applies to the
    prompts themselves."""
    prompts = _training_prompts(project)
    if f.categories:
        prompts = prompts.filter(category__in=f.categories)
    if f.created_from:
        prompts = prompts.filter(created_at__gte=f.created_from)
    if f.created_to:
        prompts = prompts.filter(created_at__lte=f.created_to)
    return prompts


_CORRECTION_FIELDS = (
    "pk", "original_trace_id", "corrected_trace_id", "step_index", "old_text", "new_text", "author__username",
)


def _correction_rec(row: tuple[Any, ...]) -> CorrectionRec:
    pk, original, corrected, index, old, new, author = row
    return CorrectionRec(pk, original, corrected, index, old, new, author or "")


def _corrections(project: Project, f: CorpusFilter) -> QuerySet[Correction]:
    """Corrections that may become training data (never rejected ones; with ``adjudicated_only``,
    approved ones only), by the filter's annotators, in id order (``_CORRECTION_FIELDS``)."""
    rows = (
        Correction.objects.filter(project=project)
        .exclude(status=CorrectionStatus.REJECTED)
        .exclude(status=CorrectionStatus.PENDING if f.adjudicated_only else "-")
    )
    return _by_annotator(rows, "author", f).order_by("pk")


def build_corpus(project: Project, *, kind: str, filters: CorpusFilter | None = None) -> Corpus:
    """Read the project's rows that ``filters`` selects into a Corpus for ``kind``."""
    f = filters or CorpusFilter()
    if kind == "rl_prompts":
        return Corpus(prompts=_prompt_recs(_rl_prompts(project, f)))

    traces = _traces(project, f)

    reviews: dict[int, list[ReviewRec]] = defaultdict(list)
    review_rows = _by_annotator(TraceReview.objects.filter(trace__in=traces), "annotator", f)
    for trace_id, who, verdict, safety, value, knowledge in review_rows.order_by(
        "trace_id", "annotator__username"
    ).values_list("trace_id", "annotator__username", "verdict", "safety_label", "value_label", "knowledge_label"):
        blank = _none_if_blank
        reviews[trace_id].append(ReviewRec(who, blank(verdict), blank(safety), blank(value), blank(knowledge)))

    adjudications: dict[int, ReviewRec] = {}
    for trace_id, who, verdict, safety, value, knowledge in Adjudication.objects.filter(trace__in=traces).values_list(
        "trace_id", "adjudicator__username", "verdict", "safety_label", "value_label", "knowledge_label"
    ):
        blank = _none_if_blank
        adjudications[trace_id] = ReviewRec(who or "", blank(verdict), blank(safety), blank(value), blank(knowledge))

    keep: set[int] | None = None
    if f.review_status != "any":
        wanted = "accept" if f.review_status == "accepted" else "reject"
        keep = {
            tid for tid in set(reviews) | set(adjudications)
            if _verdict(reviews.get(tid, []), adjudications.get(tid)) == wanted
        }

    labels: dict[tuple[int, int], list[StepLabelRec]] = defaultdict(list)
    label_rows = _by_annotator(StepLabel.objects.filter(step__trace__in=traces), "annotator", f)
    for trace_id, index, who, rating, tags in (
        label_rows.order_by("step__trace_id", "step__index", "annotator__username")
        .values_list("step__trace_id", "step__index", "annotator__username", "rating", "safety_tags")
        .iterator(chunk_size=CHUNK)
    ):
        if keep is None or trace_id in keep:
            labels[(trace_id, index)].append(StepLabelRec(who, rating, list(tags or [])))

    steps: dict[int, list[StepRec]] = defaultdict(list)
    for trace_id, index, text, origin in (
        Step.objects.filter(trace__in=traces)
        .order_by("trace_id", "index")
        .values_list("trace_id", "index", "text", "origin")
        .iterator(chunk_size=CHUNK)
    ):
        if keep is None or trace_id in keep:
            steps[trace_id].append(StepRec(index, text, origin, labels.pop((trace_id, index), [])))

    trace_recs: list[TraceRec] = []
    prompt_ids: set[int] = set()
    for pk, prompt_id, parent_id, branch_at, version, status, answer, created in (
        traces.order_by("pk")
        .values_list(
            "pk", "prompt_id", "parent_id", "branch_step_index", "model_version__name", "status", "final_answer",
            "created_at",
        )
        .iterator(chunk_size=CHUNK)
    ):
        if keep is not None and pk not in keep:
            continue
        prompt_ids.add(prompt_id)
        trace_recs.append(
            TraceRec(
                id=pk,
                prompt_id=prompt_id,
                steps=steps.pop(pk, []),
                answer=answer,
                parent_id=parent_id,
                branch_step_index=branch_at,
                model_version=version,
                status=status,
                reviews=reviews.get(pk, []),
                created_at=created,
                adjudication=adjudications.get(pk),
            )
        )
    selected = {t.id for t in trace_recs}

    corrections = [
        CorrectionRec(pk, original, corrected, index, old, new, author or "")
        for pk, original, corrected, index, old, new, author in _corrections(project, f)
        .filter(Q(original_trace__in=traces) | Q(corrected_trace__in=traces))
        .values_list(*_CORRECTION_FIELDS)
        if original in selected or corrected in selected
    ]
    comparisons = [
        ComparisonRec(pk, preferred, other, who)
        for pk, preferred, other, who in _by_annotator(
            Comparison.objects.filter(project=project, preferred__in=traces, other__in=traces), "annotator", f
        )
        .order_by("pk")
        .values_list("pk", "preferred_id", "other_id", "annotator__username")
        if preferred in selected and other in selected
    ]
    picks = _picks(project, traces, f, selected)
    # A subquery, not an IN list of up to 100k ids; prompts of traces the verdict filter dropped go.
    prompts = [p for p in _prompt_recs(Prompt.objects.filter(pk__in=traces.values("prompt_id"))) if p.id in prompt_ids]
    return Corpus(prompts=prompts, traces=trace_recs, corrections=corrections, comparisons=comparisons, picks=picks)


def _picks(
    project: Project, traces: QuerySet[Trace], f: CorpusFilter, selected: set[int] | None
) -> list[AlternativePickRec]:
    """Picks among alternatives on the selected traces (``selected``; None: all of ``traces``). A
    pick whose branch's correction a reviewer rejected is left out, as the correction is; with
    ``adjudicated_only``, only picks whose correction was approved count."""
    rows = AlternativeSet.objects.filter(trace__project=project, trace__in=traces).exclude(picked_text="")
    rows = rows.exclude(branch__correction__status=CorrectionStatus.REJECTED)
    if f.adjudicated_only:
        rows = rows.filter(branch__correction__status=CorrectionStatus.APPROVED)
    out = []
    # ``own``: the trace's step that a pick's correction replaced; that pair is the correction's record.
    for pk, trace_id, index, chosen, candidates, own, who, when in (
        _by_annotator(rows, "picked_by", f).order_by("pk").values_list(
            "pk", "trace_id", "step_index", "picked_text", "candidates", "branch__correction__old_text",
            "picked_by__username", "picked_at")
    ):
        if selected is not None and trace_id not in selected:
            continue
        texts = [c["text"] for c in candidates if c.get("kind") == "step" and c.get("text")]
        rejected = [t for t in dict.fromkeys(texts) if t != chosen and t != own]
        if rejected:
            out.append(AlternativePickRec(pk, trace_id, index, chosen, rejected, who or "", when))
    return out


# --- the same corpus, read in chunks ----------------------------------------------------------------

# The pair kinds are driven by their pairs, not by the traces: which pairs each reads, in the order
# its materialiser reads them (materialise._preference / _preference_step).
PAIR_SOURCES: dict[str, tuple[str, ...]] = {
    "preference": ("corrections", "comparisons"),
    "preference_step": ("corrections", "picks"),
}
_TRACE_FIELDS = ("pk", "prompt_id", "parent_id", "branch_step_index", "model_version__name", "status", "final_answer")


class _Ids:
    """Ids, their PostgreSQL array literal and their range, made once for the several queries of a
    chunk (the literal of 5,000 ids was made once per query, 4% of a build's CPU)."""

    __slots__ = ("dense", "high", "ids", "literal", "low")

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = list(ids)
        # A literal, not a list: psycopg's list adapter is Python code, one call per element.
        self.literal = "{" + ",".join(map(str, map(int, self.ids))) + "}"
        self.low, self.high = (min(self.ids), max(self.ids)) if self.ids else (None, None)
        # Every id from low to high: the range alone selects exactly these.
        self.dense = bool(self.ids) and self.high - self.low + 1 == len(set(self.ids))


class _AnyOf(Func):
    """``field = ANY(%s)``, the ids as one array parameter. Django's ``field__in=ids`` renders and
    prepares one placeholder per id, which at a chunk of 5,000 ids costs more than the query.

    With ``field BETWEEN`` the ids' smallest and largest, which the array implies: the planner has
    no estimate for an array of 5,000 ids, and at 100k traces it scanned every step, label and
    review of the table for each chunk (in parallel workers: 0.1 s of PostgreSQL per chunk, for a
    label query that found none). The range, from the column's statistics, makes it use the index
    when the chunk's ids are close together, as the ids of traces created together are.

    When the ids are every id of their range (``_Ids.dense``: a project's traces created in one
    run, their prompts), the range alone: the same rows, without the array. Planning an array of
    10,000 ids took 2-7 ms per query, and an index scan probes the index once per element; the
    range is one probe (a chunk's reviews, steps and prompts at 1M: 5 + 11 + 20 ms, not 11 + 36 +
    41 ms, in EXPLAIN ANALYZE)."""

    output_field = BooleanField()

    def __init__(self, field: str, ids: Iterable[int] | _Ids) -> None:
        super().__init__(F(field))
        self.ids = ids if isinstance(ids, _Ids) else _Ids(ids)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        lhs, params = compiler.compile(self.source_expressions[0])
        ids = self.ids
        if ids.low is None:
            return f"{lhs} = ANY(%s::bigint[])", (*params, ids.literal)
        if ids.dense:
            return f"{lhs} BETWEEN %s AND %s", (*params, ids.low, ids.high)
        return (
            f"({lhs} = ANY(%s::bigint[]) AND {lhs} BETWEEN %s AND %s)",
            (*params, ids.literal, *params, ids.low, ids.high),
        )


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_END = object()


def _read_ahead(chunks: Callable[[], Iterator[Corpus]], *, depth: int = 1) -> Iterator[Corpus]:
    """``chunks()``, run in a reader thread on its own database connection, ``depth`` chunks ahead
    of the caller: the database works on the next chunk's queries while this thread materialises
    and writes the current one. The thread's Python work still takes turns with the caller's for
    the GIL, so this hides the database's time, not the readers'. Memory holds ``depth`` + 2 chunks.

    An error in the reader is raised here, at the chunk it would have given. If the caller stops
    early (closes the generator, or fails), the reader stops after the chunk it is reading. The
    reader's connection is closed when it ends: one connection per build, never left open."""
    handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def give(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks():
                if not give(chunk):
                    return
            give(_END)
        except BaseException as exc:  # handed to the caller, raised there
            give(None, exc)
        finally:
            connections.close_all()  # this thread's connections only

    reader = threading.Thread(target=read, name="corpus-reader", daemon=True)
    reader.start()
    try:
        while True:
            chunk, error = handoff.get()
            if error is not None:
                raise error
            if chunk is _END:
                return
            yield chunk
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to hand over, then wait for it
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.1)
        reader.join()


class CorpusStream:
    """The corpus ``build_corpus`` reads, as a sequence of small Corpus chunks, so that memory holds
    one chunk (``chunk_size`` traces, prompts or pairs) whatever the size of the project.

    ``materialise`` of each chunk in turn yields exactly the records, in exactly the order, that
    ``materialise`` of ``build_corpus`` yields (same filters, same rules), so a snapshot's hash does
    not depend on which of the two read it:

    - trace kinds (sft, stepwise, verifiers, ...): the traces are read in ``Corpus`` order (created,
      then id) from one server-side cursor; each chunk holds its traces with their steps, labels,
      reviews and adjudication, their prompts, and the corrections on or into them;
    - pair kinds (``PAIR_SOURCES``): the pairs are read in id order (picks in ``Corpus`` order), and
      each chunk holds its pairs and the selected traces they name;
    - ``rl_prompts``: the prompts in id order.

    Chunks' records are presorted (``Corpus(presorted=True)``); their ``created_at`` is not read
    (the database sorts). ``has_images()`` is the whole corpus's ``Corpus.has_images``: pass it to
    ``materialise`` as ``images`` when the filter leaves it unset, since one chunk does not know.

    Outside a transaction (a worker's build) the chunks are read one ahead by a reader thread on its
    own connection (``_read_ahead``), so the database's time is hidden behind the caller's work;
    inside one (a request, a test) they are read on the caller's connection, which alone sees the
    transaction's rows. Either way the chunks and their order are the same. Each chunk's queries
    see the data as committed when they run, as before: a label saved during a build may be in a
    later chunk and not in an earlier one (a snapshot freezes what it read)."""

    def __init__(
        self, project: Project, *, kind: str, filters: CorpusFilter | None = None, chunk_size: int = CHUNK
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.project, self.kind, self.filters, self.chunk_size = project, kind, filters or CorpusFilter(), chunk_size

    def __iter__(self) -> Iterator[Corpus]:
        if self.kind == "rl_prompts":
            chunks = self._prompt_chunks
        elif self.kind in PAIR_SOURCES:
            chunks = self._pair_chunks
        else:
            chunks = self._trace_chunks
        if connection.in_atomic_block:
            # Another connection would not see this transaction's rows (nor its own writes): read
            # on this one, chunk after chunk.
            return chunks()
        return _read_ahead(chunks)

    # -- the images column

    def has_images(self) -> bool:
        """Whether a prompt of the corpus has an image (``Corpus.has_images`` of ``build_corpus``)."""
        f = self.filters
        if self.kind == "rl_prompts":
            return PromptImage.objects.filter(prompt__in=_rl_prompts(self.project, f)).exists()
        with_images = _traces(self.project, f).filter(prompt_id__in=PromptImage.objects.values("prompt_id"))
        if f.review_status == "any":
            return with_images.exists()
        ids = with_images.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=self.chunk_size)
        return any(self._judged(batch)[2] for batch in _chunked(ids, self.chunk_size))

    # -- chunks

    def _prompt_chunks(self) -> Iterator[Corpus]:
        rows = (
            _rl_prompts(self.project, self.filters)
            .order_by("pk")
            .values_list(*_PROMPT_FIELDS)
            .iterator(chunk_size=self.chunk_size)
        )
        for batch in _chunked(rows, self.chunk_size):
            yield Corpus(prompts=_prompt_recs_of(batch), presorted=True)

    def _trace_chunks(self) -> Iterator[Corpus]:
        rows = (
            _traces(self.project, self.filters)
            .order_by("created_at", "pk")  # Corpus order (records._order_key), sorted by the database
            .values_list(*_TRACE_FIELDS)
            .iterator(chunk_size=self.chunk_size)
        )
        for batch in _chunked(rows, self.chunk_size):
            traces, ids = self._trace_recs(batch)
            if traces:
                yield Corpus(
                    prompts=self._prompts_of(traces),
                    traces=traces,
                    corrections=self._corrections_touching(ids),
                    presorted=True,
                )

    def _pair_chunks(self) -> Iterator[Corpus]:
        project, f = self.project, self.filters
        traces = _traces(project, f)
        sources = PAIR_SOURCES[self.kind]
        if "corrections" in sources:
            corrections = [
                _correction_rec(row)
                for row in _corrections(project, f).filter(
                    Q(original_trace__in=traces) | Q(corrected_trace__in=traces)
                ).values_list(*_CORRECTION_FIELDS)
            ]
            for part in _chunked(corrections, self.chunk_size):
                ids = {c.original_trace_id for c in part} | {c.corrected_trace_id for c in part}
                yield self._with_traces(ids, corrections=part)
        if "comparisons" in sources:
            comparisons = [
                ComparisonRec(*row)
                for row in _by_annotator(
                    Comparison.objects.filter(project=project, preferred__in=traces, other__in=traces), "annotator", f
                ).order_by("pk").values_list("pk", "preferred_id", "other_id", "annotator__username")
            ]
            for part in _chunked(comparisons, self.chunk_size):
                ids = {c.preferred_trace_id for c in part} | {c.other_trace_id for c in part}
                yield self._with_traces(ids, comparisons=part)
        if "picks" in sources:
            picks = sorted(_picks(project, traces, f, None), key=_order_key)
            for part in _chunked(picks, self.chunk_size):
                yield self._with_traces({p.trace_id for p in part}, picks=part)

    def _with_traces(self, ids: set[int], **pairs: Any) -> Corpus:
        """A chunk of pairs with the traces they name that the filter selects (others stay out, as
        in ``build_corpus``: the materialiser skips a pair whose trace it does not find)."""
        rows = _traces(self.project, self.filters).filter(_AnyOf("pk", ids)).order_by("pk").values_list(*_TRACE_FIELDS)
        traces, _ = self._trace_recs(list(rows))
        return Corpus(prompts=self._prompts_of(traces), traces=traces, presorted=True, **pairs)

    # -- one chunk's rows

    def _judged(self, ids: list[int] | _Ids) -> tuple[dict[int, list[ReviewRec]], dict[int, ReviewRec], list[int]]:
        """The reviews and adjudications of traces ``ids``, and the ids the verdict filter keeps."""
        f = self.filters
        blank = _none_if_blank
        ids = ids if isinstance(ids, _Ids) else _Ids(ids)
        reviews: dict[int, list[ReviewRec]] = defaultdict(list)
        for trace_id, who, verdict, safety, value, knowledge in (
            _by_annotator(TraceReview.objects.filter(_AnyOf("trace_id", ids)), "annotator", f)
            .order_by("trace_id", "annotator__username")
            .values_list("trace_id", "annotator__username", "verdict", "safety_label", "value_label", "knowledge_label")
        ):
            # ``x or None`` is _none_if_blank inlined: a call per label per review adds up here.
            reviews[trace_id].append(ReviewRec(who, verdict or None, safety or None, value or None, knowledge or None))
        adjudications: dict[int, ReviewRec] = {}
        for trace_id, who, verdict, safety, value, knowledge in Adjudication.objects.filter(
            _AnyOf("trace_id", ids)
        ).values_list("trace_id", "adjudicator__username", "verdict", "safety_label", "value_label", "knowledge_label"):
            adjudications[trace_id] = ReviewRec(
                who or "", blank(verdict), blank(safety), blank(value), blank(knowledge)
            )
        if f.review_status == "any":
            return reviews, adjudications, ids.ids
        wanted = "accept" if f.review_status == "accepted" else "reject"
        kept = [tid for tid in ids.ids if _verdict(reviews.get(tid, []), adjudications.get(tid)) == wanted]
        return reviews, adjudications, kept

    def _trace_recs(self, rows: list[tuple[Any, ...]]) -> tuple[list[TraceRec], _Ids]:
        """TraceRecs of trace rows (``_TRACE_FIELDS``), in the rows' order, that the filter keeps,
        and their ids."""
        if not rows:
            return [], _Ids(())
        ids = _Ids(row[0] for row in rows)
        reviews, adjudications, kept = self._judged(ids)
        if not kept:
            return [], _Ids(())
        every = len(kept) == len(ids.ids)
        if not every:
            ids = _Ids(kept)
        labels: dict[tuple[int, int], list[StepLabelRec]] = defaultdict(list)
        for trace_id, index, who, rating, tags in (
            _by_annotator(StepLabel.objects.filter(_AnyOf("step__trace_id", ids)), "annotator", self.filters)
            .order_by("step__trace_id", "step__index", "annotator__username")
            .values_list("step__trace_id", "step__index", "annotator__username", "rating", "safety_tags")
        ):
            labels[(trace_id, index)].append(StepLabelRec(who, rating, list(tags or [])))
        # One row per step, in (trace, index) order, which the index (trace_id, index) gives without
        # a sort. Aggregating them into arrays per trace (array_agg … ORDER BY index) cost the
        # database four times as much, a sort per array per trace, for no saving here.
        steps: dict[int, list[StepRec]] = {}
        last, of_trace = None, None
        for trace_id, i, text, origin in (
            Step.objects.filter(_AnyOf("trace_id", ids))
            .order_by("trace_id", "index")
            .values_list("trace_id", "index", "text", "origin")
        ):
            if trace_id != last:
                last, of_trace = trace_id, []
                steps[trace_id] = of_trace
            # Positional arguments, and no label look-up in a chunk without labels: four per trace.
            of_trace.append(StepRec(i, text, origin, labels.pop((trace_id, i), []) if labels else []))
        keep = None if every else set(kept)
        no_steps: list[StepRec] = []
        return [
            # TraceRec's fields in order: id, prompt_id, steps, answer, parent_id, branch_step_index,
            # model_version, status, reviews, created_at (not read: the database sorts), adjudication.
            TraceRec(
                pk,
                prompt_id,
                steps.pop(pk, no_steps) or [],
                answer,
                parent_id,
                branch_at,
                version,
                status,
                reviews.get(pk) or [],
                None,
                adjudications.get(pk),
            )
            for pk, prompt_id, parent_id, branch_at, version, status, answer in rows
            if keep is None or pk in keep
        ], ids

    def _prompts_of(self, traces: list[TraceRec]) -> list[PromptRec]:
        ids = _Ids({t.prompt_id for t in traces})
        return _prompt_recs_of(_prompt_rows(Prompt.objects.filter(_AnyOf("pk", ids))), ids=ids)

    def _corrections_touching(self, ids: _Ids) -> list[CorrectionRec]:
        """The corrections on (original) or into (corrected branch) traces ``ids``, in id order."""
        rows = _corrections(self.project, self.filters).filter(
            _AnyOf("original_trace_id", ids) | _AnyOf("corrected_trace_id", ids)
        )
        return [_correction_rec(row) for row in rows.values_list(*_CORRECTION_FIELDS)]
