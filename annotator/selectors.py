"""Reads, scoped to one project. Objects of other projects are indistinguishable from missing ones."""

from __future__ import annotations

from typing import Any

from django.db.models import (
    Avg,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from annotator import answers
from annotator.counting import fast_count
from annotator.errors import NotFound
from annotator.models import (
    Adjudication,
    Assignment,
    AuditEvent,
    Correction,
    DatasetSnapshot,
    EvalResult,
    GoldLabel,
    Membership,
    MetricPoint,
    ModelVersion,
    Project,
    Prompt,
    PromptImage,
    QueueCounter,
    Step,
    StepLabel,
    StepScore,
    Trace,
    TraceReview,
    TraceStatus,
    TraceTotals,
    TrainingRun,
    Webhook,
    WebhookDelivery,
)
from trainer_worker.training.heldout import answer_right, user_text


def projects_for_user(user) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user=user).distinct().order_by("id")


def roles_of_user(user) -> dict[int, str]:
    """{project id: the user's role} for every project the user is a member of."""
    return dict(Membership.objects.filter(user=user).values_list("project_id", "role"))


def get_in_project(queryset: QuerySet, project: Project, pk, *, what: str):
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(f"{what} not found.") from None
    obj = queryset.filter(project=project, pk=pk).first()
    if obj is None:
        raise NotFound(f"{what} not found.")
    return obj


def prompt_list(
    project: Project, *, category: str | None = None, search: str | None = None, has_images: bool | None = None
) -> QuerySet[Prompt]:
    # Counted per returned row (a correlated subquery), not by a GROUP BY over every prompt and trace:
    # a page of a million prompts reads its 50 rows' traces only.
    traces = Trace.objects.filter(prompt_id=OuterRef("pk")).order_by().values("prompt_id").annotate(n=Count("id"))
    qs = Prompt.objects.filter(project=project).prefetch_related("images").annotate(
        trace_count=Coalesce(Subquery(traces.values("n")[:1]), 0))
    if category:
        qs = qs.filter(category=category)
    if search:
        qs = qs.filter(messages__icontains=search)
    if has_images is not None:
        has = Exists(PromptImage.objects.filter(prompt_id=OuterRef("pk")))
        qs = qs.filter(has if has_images else ~has)
    return qs.order_by("id")


def with_step_counts(qs: QuerySet[Trace]) -> QuerySet[Trace]:
    """``step_count`` per returned row: a correlated subquery, evaluated for the page's rows only."""
    steps = Step.objects.filter(trace_id=OuterRef("pk")).order_by().values("trace_id").annotate(n=Count("id"))
    return qs.annotate(step_count=Coalesce(Subquery(steps.values("n")[:1]), 0))


def trace_list(
    project: Project,
    *,
    status: str | None = None,
    prompt_id: int | None = None,
    model_version_id: int | None = None,
    parent_id: int | None = None,
    category: str | None = None,
    started_by: str | None = None,
) -> QuerySet[Trace]:
    qs = with_step_counts(Trace.objects.filter(project=project))
    if status:
        qs = qs.filter(status=status)
    if prompt_id:
        qs = qs.filter(prompt_id=prompt_id)
    if model_version_id:
        qs = qs.filter(model_version_id=model_version_id)
    if parent_id:
        qs = qs.filter(parent_id=parent_id)
    if category:
        qs = qs.filter(prompt__category=category)
    if started_by:
        qs = qs.filter(created_by__username=started_by)
    return qs.order_by("id")


def trace_detail_queryset() -> QuerySet[Trace]:
    steps = Step.objects.order_by("index").prefetch_related(
        Prefetch("labels", queryset=StepLabel.objects.select_related("annotator"))
    )
    return Trace.objects.prefetch_related(
        Prefetch("steps", queryset=steps),
        Prefetch("reviews", queryset=TraceReview.objects.select_related("annotator")),
        "branches",
        "scores",
        "alternative_sets",
    ).select_related("prompt", "model_version")


def correction_list(project: Project) -> QuerySet[Correction]:
    return Correction.objects.filter(project=project).select_related("author").order_by("id")


def model_version_list(project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).order_by("id")


def audit_list(project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project).select_related("actor").order_by("-id")


def member_list(project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user", "project").order_by("id")


def snapshot_list(project: Project) -> QuerySet[DatasetSnapshot]:
    """The project's dataset snapshots, newest first."""
    return DatasetSnapshot.objects.filter(project=project).select_related("created_by").order_by("-id")


def run_list(project: Project) -> QuerySet[TrainingRun]:
    """The project's training runs, newest first."""
    return TrainingRun.objects.filter(project=project).prefetch_related("snapshots").order_by("-id")


def run_metrics(run_id: int) -> list[dict]:
    """Every metric point of the run as {step, name, value}, by step then name."""
    return list(MetricPoint.objects.filter(run_id=run_id).order_by("step", "name").values("step", "name", "value"))


def model_evals(version: ModelVersion) -> QuerySet[EvalResult]:
    return EvalResult.objects.filter(model_version=version).order_by("id")


def project_evals(project: Project) -> QuerySet[EvalResult]:
    return EvalResult.objects.filter(model_version__project=project).order_by("model_version_id", "id")


# --- the team: queues, assignments, agreement ---------------------------------------------------


def _by(qs: QuerySet, user) -> QuerySet:
    """``qs`` (assignments or reviews, looked up per trace by the prompt or the trace) narrowed to
    ``user`` with ``annotator_id + 0``, which no index serves: PostgreSQL then reads the few rows of
    the prompt or trace (its unique index) and checks the person, instead of reading all of the
    person's rows for every trace where its statistics say the person has one (a new annotator's
    queue at 1M traces: minutes a page before ANALYZE)."""
    return qs.alias(annotator_plus_0=F("annotator_id") + 0).filter(annotator_plus_0=user.pk).order_by()


def _assigned_to(user) -> Exists:
    return Exists(Assignment.objects.filter(prompt_id=OuterRef("prompt_id"), annotator=user))


def _reviewed_by(user) -> Exists:
    return Exists(TraceReview.objects.filter(trace_id=OuterRef("pk"), annotator=user))


QUEUE_ORDERS = ("arrival", "lowest_score", "disagreement", "confident_wrong")


def _lowest_score() -> Subquery:
    lowest = (StepScore.objects.filter(trace_id=OuterRef("pk")).order_by().values("trace_id")
              .annotate(m=Min("score")).values("m")[:1])
    return Subquery(lowest, output_field=FloatField())


def _scorer_spread() -> Subquery:
    # Per step (and the answer): the spread of the scorers' scores; the trace's is its largest spread.
    spread = (StepScore.objects.filter(trace_id=OuterRef("pk")).order_by().values("step_index")
              .annotate(n=Count("id"), spread=Max("score") - Min("score")).filter(n__gte=2)
              .order_by("-spread").values("spread")[:1])
    return Subquery(spread, output_field=FloatField())


def _mean_step_score() -> Subquery:
    mean = (StepScore.objects.filter(trace_id=OuterRef("pk"), step_index__gte=0).order_by().values("trace_id")
            .annotate(m=Avg("score")).values("m")[:1])
    return Subquery(mean, output_field=FloatField())


def answer_check(qs: QuerySet[Trace]) -> tuple[list[int], list[int]]:
    """The finished traces of ``qs`` whose final answer is (wrong, right) against the prompt's
    reference, by the check the held-out evaluation uses (``heldout.answer_right``: the demo task's
    checker for its prompts, the reference rule check for the others). A trace with no final answer
    (the think block never closed) is wrong; one whose prompt has nothing to check against is in
    neither list. Each distinct (prompt, answer) is checked once."""
    rows = list(qs.filter(status=TraceStatus.FINISHED).order_by().values_list("id", "prompt_id", "final_answer"))
    prompts = {
        pk: (user_text(messages), reference)
        for pk, messages, reference in Prompt.objects.filter(pk__in={r[1] for r in rows})
        .values_list("id", "messages", "reference_answer")
    }
    verdicts: dict[tuple[int, str | None], bool | None] = {}
    wrong: list[int] = []
    right: list[int] = []
    for trace_id, prompt_id, answer in rows:
        key = (prompt_id, answer)
        if key not in verdicts:
            text, reference = prompts[prompt_id]
            verdicts[key] = answer_right(text, answer, reference)
        if verdicts[key] is False:
            wrong.append(trace_id)
        elif verdicts[key]:
            right.append(trace_id)
    return wrong, right


def queue_list(
    project: Project,
    user,
    *,
    mine: bool = False,
    reviewed: bool | None = None,
    verdict: str | None = None,
    disputed: bool | None = None,
    category: str | None = None,
    order: str = "arrival",
    from_scores: bool = False,
) -> QuerySet[Trace]:
    """The review queue: traces, oldest first, each with ``mine`` (assigned to ``user``),
    ``my_verdict`` and ``triage_score`` (what the order sorts by; None in arrival order).
    ``reviewed`` means by ``user`` when ``mine`` is set (their to-do / done), by
    anyone otherwise. ``verdict`` and ``disputed`` read the trace's review summary columns.

    The triage orders put the traces most likely wrong first, from the machine scores
    (``StepScore``: every scorer, every step and the final answer); ties go oldest first:

    - ``lowest_score``: by the lowest score of any step or the answer, lowest first; traces nobody
      scored come last.
    - ``disagreement``: the scorers' disagreement. For each step (and the answer) scored by two or
      more scorers, the spread max - min of their scores; a trace's is its largest spread, and the
      largest comes first. Traces with no step scored by two scorers come last.
    - ``confident_wrong``: confident but wrong against the reference. First the finished traces
      whose final answer is wrong against the prompt's reference (``answer_check``), the most
      confident first: by the mean score of their steps (every scorer; the answer's own score left
      out, since a reference-based scorer already marks a wrong answer low), those without step
      scores after them. Then the traces that cannot be checked (no reference, not finished), then
      those whose answer is right, oldest first. ``triage_score`` is the mean step score of the wrong
      ones, None for the others.

    The keys are read from the trace's columns ``lowest_score``, ``scorer_spread`` and
    ``mean_step_score`` (kept by triggers on the scores table, migration 0010), and, for
    ``confident_wrong``, ``answer_rank`` and ``wrong_confidence`` (the answer check cached on the
    trace, annotator/answers.py, migration 0013; the finished traces not checked yet are checked
    here first), so every order is an index read. ``from_scores`` computes them as before those
    migrations instead: a correlated subquery over StepScore per trace and, for
    ``confident_wrong``, the answer check of every finished trace in Python (``answer_check``),
    for the tests and the baseline of bench/lists.py.
    """
    if order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {order!r}")
    my_review = _by(TraceReview.objects.filter(trace_id=OuterRef("pk")), user).values("verdict")[:1]
    plan = _mine_plan() if mine else None
    assigned = Value(True) if plan == "items" else _assigned_to(user)
    qs = Trace.objects.filter(project=project).annotate(mine=assigned, my_verdict=my_review)
    if plan == "items":
        # The person's queue items (migration 0016): a page is an index range of theirs in trace order.
        # As an EXISTS per trace, PostgreSQL estimated the semi-join from the person's assignments
        # across every project (920 rows where 10,000 match at 100k), read the whole project by a hash
        # join and sorted it for every page (100-270 ms at 100k, bench/lists.py).
        # The page orders by the items' trace ids (``queue_trace``, equal to the trace's id), so that
        # a cursor's bound is a range of the items' index too: PostgreSQL does not carry a range of
        # the trace's ids over to the joined items, and estimating it on the trace table it read the
        # whole project again (146 ms for a first page bounded at the project's first id, at 100k).
        items = {"queue_items__annotator_id": user.pk, "queue_items__project_id": project.pk}
        if reviewed is not None:
            items["queue_items__reviewed"] = reviewed
        qs = qs.filter(**items).annotate(queue_trace=F("queue_items__trace_id"))
    elif mine:  # "exists": the plan before the counters (bench/lists.py's baseline)
        qs = qs.filter(mine=True)
        if reviewed is not None:
            qs = qs.filter(_reviewed_by(user)) if reviewed else qs.exclude(_reviewed_by(user))
    elif reviewed is not None:
        qs = qs.filter(review_count__gt=0) if reviewed else qs.filter(review_count=0)
    if verdict:
        qs = qs.filter(verdict=verdict)
    if disputed is not None:
        qs = qs.filter(disputed=disputed)
    if category:
        qs = qs.filter(prompt__category=category)
    if order == "lowest_score":
        key = _lowest_score() if from_scores else F("lowest_score")
        return qs.annotate(triage_score=key).order_by(F("triage_score").asc(nulls_last=True), "id")
    if order == "disagreement":
        key = _scorer_spread() if from_scores else F("scorer_spread")
        return qs.annotate(triage_score=key).order_by(F("triage_score").desc(nulls_last=True), "id")
    if order == "confident_wrong" and not from_scores:
        # The finished traces nobody checked yet (written around the services): normally none.
        answers.verdicts_fill(project_id=project.pk, unranked=True)
        # triage_rank keeps the cursors' signature of the path below (the same order).
        return qs.annotate(triage_rank=F("answer_rank"), triage_score=F("wrong_confidence")).order_by(
            "triage_rank", F("triage_score").desc(nulls_last=True), "id")
    if order == "confident_wrong":
        wrong, right = answer_check(qs)
        # Django binds parameters client-side with psycopg 3, so a long id list is not held to
        # PostgreSQL's 65,535 parameters per statement (PostgreSQL plans IN (...) as = ANY(array)).
        rank = Case(When(id__in=wrong, then=Value(0)), When(id__in=right, then=Value(2)), default=Value(1),
                    output_field=IntegerField())
        qs = qs.annotate(triage_rank=rank).annotate(
            triage_score=Case(When(triage_rank=0, then=_mean_step_score() if from_scores else F("mean_step_score")),
                               default=None, output_field=FloatField()))
        return qs.order_by("triage_rank", F("triage_score").desc(nulls_last=True), "id")
    qs = qs.annotate(triage_score=Value(None, output_field=FloatField()))
    return qs.order_by("queue_trace") if plan == "items" else qs.order_by("id")


def _mine_plan() -> str:
    """How queue_list reads the ``mine`` pages: from the queue items ("items"); bench/lists.py's
    baseline sets "exists" (the EXISTS per trace of before migration 0016)."""
    return "items"


def queue_next(project: Project, user, *, after: int | None = None) -> tuple[Trace | None, Prompt | None]:
    """The next item for ``user``: the first trace (after ``after``, wrapping round) of a prompt
    assigned to them that they have not reviewed and that has not failed. With none left, an
    assigned prompt that has no trace yet (to generate), else (None, None)."""
    todo = (
        Trace.objects.filter(project=project, queue_items__annotator_id=user.pk, queue_items__project_id=project.pk,
                             queue_items__reviewed=False)
        .exclude(status=TraceStatus.FAILED)
        .order_by("id")
    )
    trace = None
    if after is not None:
        trace = todo.filter(id__gt=after).first()
    if trace is None:
        trace = todo.exclude(id=after).first() if after is not None else todo.first()
    if trace is not None:
        return trace, None
    return None, _untraced_assigned(project, user).order_by("id").first()


def _untraced_assigned(project: Project, user) -> QuerySet[Prompt]:
    """The prompts assigned to ``user`` that have no trace yet (``has_trace``, kept by triggers)."""
    return Prompt.objects.filter(project=project, has_trace=False, assignments__annotator=user)


# The old path's cap (``from_counters=False``): the user's counts exact up to this many rows, the
# planner's estimate above it. The counters (QueueCounter) made the cap unneeded for the counts.
MINE_COUNT_CAP = 1_000


def _mine(project: Project, user) -> QuerySet[Trace]:
    return Trace.objects.filter(project=project).filter(_assigned_to(user)).exclude(status=TraceStatus.FAILED)


def queue_counter(project: Project, user) -> dict[str, int]:
    """The user's queue in the project as PostgreSQL keeps it (QueueCounter, migration 0014): exact,
    one row. ``assigned``: traces not failed of the prompts assigned to them; ``done``: of those,
    reviewed by them; ``left``: assigned - done; ``failed`` / ``failed_done``: the same for the
    failed traces; ``untraced``: their assigned prompts with no trace yet."""
    row = (QueueCounter.objects.filter(project=project, annotator_id=user.pk)
           .values("assigned", "done", "failed", "failed_done", "untraced").first())
    row = row or {"assigned": 0, "done": 0, "failed": 0, "failed_done": 0, "untraced": 0}
    return {**row, "left": row["assigned"] - row["done"]}


def queue_mine_count(project: Project, user, *, reviewed: bool | None = None) -> int:
    """How many rows ``queue_list(mine=True, reviewed=...)`` has with no other filter (its failed
    traces included, as the page lists them), from the counter."""
    c = queue_counter(project, user)
    if reviewed is None:
        return c["assigned"] + c["failed"]
    if reviewed:
        return c["done"] + c["failed_done"]
    return c["left"] + c["failed"] - c["failed_done"]


def _mine_counts_capped(project: Project, user) -> dict[str, Any]:
    """The old path (before migration 0014), for the tests and bench/lists.py's baseline: assigned /
    done / left as fast counts capped at MINE_COUNT_CAP, and whether all three are exact."""
    mine = _mine(project, user)
    assigned, assigned_exact = fast_count(mine, cap=MINE_COUNT_CAP)
    left, left_exact = fast_count(mine.exclude(_reviewed_by(user)), cap=MINE_COUNT_CAP)
    if assigned_exact and left_exact:
        return {"assigned": assigned, "done": assigned - left, "left": left, "exact": True}
    # Estimates: done is estimated by itself (assigned - left of two estimates can be far off, even 0).
    done, _ = fast_count(mine.filter(_reviewed_by(user)), cap=MINE_COUNT_CAP)
    return {"assigned": max(assigned, left), "done": done, "left": left, "exact": False}


def queue_left(project: Project, user) -> int:
    """How many of the user's assigned traces are left to review (the next item's counter): exact."""
    return queue_counter(project, user)["left"]


def _project_totals_counted(project: Project) -> tuple[dict[str, int], bool]:
    """The old path (before migration 0015), for bench/lists.py's baseline: fast counts
    (annotator/counting.py), each an index range read of at most COUNT_CAP + 1 rows and an EXPLAIN
    above it; estimates above the cap."""
    traces = Trace.objects.filter(project=project)
    totals: dict[str, int] = {}
    exact = True
    for name, qs in (("traces", traces), ("unreviewed", traces.filter(review_count=0)),
                     ("reviewed", traces.filter(review_count__gt=0)), ("disputed", traces.filter(disputed=True))):
        totals[name], was_exact = fast_count(qs)
        exact = exact and was_exact
    return totals, exact


def project_totals(project: Project) -> dict[str, int]:
    """The project's traces / unreviewed / reviewed / disputed, as PostgreSQL keeps them
    (TraceTotals, migration 0015: the sums of at most 16 rows): exact."""
    row = TraceTotals.objects.filter(project=project).aggregate(
        traces=Coalesce(Sum("traces"), 0), unreviewed=Coalesce(Sum("unreviewed"), 0),
        disputed=Coalesce(Sum("disputed"), 0))
    return {"traces": row["traces"], "unreviewed": row["unreviewed"],
            "reviewed": row["traces"] - row["unreviewed"], "disputed": row["disputed"]}


def queue_counts(project: Project, user, *, from_counters: bool = True) -> dict[str, Any]:
    """Counters for the queue page: the user's assigned / done / left and prompts without a trace
    (their QueueCounter row) and the project's totals (its TraceTotals rows): exact, so
    ``mine_exact`` and ``totals_exact`` are always true. ``from_counters=False`` counts them as before
    migrations 0014 and 0015 (capped fast counts, estimates above MINE_COUNT_CAP and COUNT_CAP), for
    the tests and the baseline of bench/lists.py."""
    if not from_counters:
        totals, exact = _project_totals_counted(project)
        mine_counts = _mine_counts_capped(project, user)
        untraced, untraced_exact = fast_count(_untraced_assigned(project, user), cap=MINE_COUNT_CAP)
        return {"assigned": mine_counts["assigned"], "done": mine_counts["done"], "left": mine_counts["left"],
                "prompts_without_trace": untraced, "mine_exact": mine_counts["exact"] and untraced_exact,
                **totals, "totals_exact": exact}
    c = queue_counter(project, user)
    return {"assigned": c["assigned"], "done": c["done"], "left": c["left"], "prompts_without_trace": c["untraced"],
            "mine_exact": True, **project_totals(project), "totals_exact": True}


def assignment_list(project: Project) -> QuerySet[Assignment]:
    return Assignment.objects.filter(project=project).select_related("annotator").order_by("id")


def assignment_progress(project: Project) -> list[dict[str, Any]]:
    """Per annotator: prompts assigned, their traces (not failed), and how many of those the
    annotator reviewed (their QueueCounter row: one read, not a count over their traces each)."""
    counters = {c["annotator_id"]: c for c in QueueCounter.objects.filter(project=project).values(
        "annotator_id", "assigned", "done")}
    rows = []
    people = Assignment.objects.filter(project=project).values("annotator_id", "annotator__username").annotate(
        prompts=Count("id")
    )
    for row in people.order_by("annotator__username"):
        c = counters.get(row["annotator_id"], {"assigned": 0, "done": 0})
        rows.append({"annotator": {"id": row["annotator_id"], "username": row["annotator__username"]},
                     "prompts": row["prompts"], "traces": c["assigned"], "done": c["done"],
                     "left": c["assigned"] - c["done"]})
    return rows


def adjudication_of(trace: Trace) -> Adjudication | None:
    return Adjudication.objects.filter(trace=trace).select_related("adjudicator").first()


def gold_list(project: Project) -> QuerySet[GoldLabel]:
    return GoldLabel.objects.filter(trace__project=project).order_by("id")


REVIEW_FAMILIES = ("verdict", "safety_label", "value_label", "knowledge_label")


def agreement_report(project: Project, *, bucket: str = "week") -> dict[str, Any]:
    """Agreement per label family (annotator.agreement), plus per-annotator item counts and times."""
    from annotator import agreement

    reviews = list(
        TraceReview.objects.filter(trace__project=project).values_list(
            "trace_id", "annotator__username", *REVIEW_FAMILIES, "updated_at", "lead_time_s"
        )
    )
    golds = list(gold_list(project).values("trace_id", *REVIEW_FAMILIES, "step_ratings"))
    families: dict[str, Any] = {}
    for k, family in enumerate(REVIEW_FAMILIES):
        ratings = [agreement.Rating(r[0], r[1], r[2 + k], r[6]) for r in reviews if r[2 + k]]
        gold = {g["trace_id"]: g[family] for g in golds if g[family]}
        families[family] = agreement.family_report(ratings, gold=gold, bucket=bucket)
    steps = StepLabel.objects.filter(step__trace__project=project, rating__isnull=False).values_list(
        "step__trace_id", "step__index", "annotator__username", "rating", "updated_at"
    )
    step_gold = {
        (g["trace_id"], int(index)): rating
        for g in golds
        for index, rating in (g["step_ratings"] or {}).items()
        if rating is not None
    }
    families["step_rating"] = agreement.family_report(
        [agreement.Rating((t, i), who, rating, when) for t, i, who, rating, when in steps],
        level="ordinal",
        gold=step_gold,
        bucket=bucket,
    )
    by_person: dict[str, list[float | None]] = {}
    for row in reviews:
        by_person.setdefault(row[1], []).append(row[7])
    agree: dict[str, list[tuple[int, float]]] = {}
    for report in families.values():
        for person in report["per_annotator"]:
            if person["agreement_vs_consensus"] is not None:
                agree.setdefault(person["annotator"], []).append(
                    (person["consensus_items"], person["agreement_vs_consensus"])
                )
    annotators = []
    for who in sorted(set(by_person) | set(agree)):
        weighted = agree.get(who, [])
        total = sum(n for n, _ in weighted)
        annotators.append({
            "annotator": who,
            "items": len(by_person.get(who, [])),
            "median_seconds": agreement.median(by_person.get(who, [])),
            "agreement": round(sum(n * a for n, a in weighted) / total, 4) if total else None,
        })
    return {"bucket": bucket, "families": families, "annotators": annotators}


def webhook_list(project: Project) -> QuerySet[Webhook]:
    return Webhook.objects.filter(project=project).order_by("id")


def delivery_list(webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(webhook=webhook).order_by("-id")


def model_lineage(version: ModelVersion) -> dict[str, Any]:
    """A model version's parent, producing run with its snapshots, evaluations and promotions."""
    run = None
    if version.produced_by_id:
        run = TrainingRun.objects.filter(pk=version.produced_by_id).prefetch_related("snapshots").first()
    promotions = [
        {"by": getattr(e.actor, "username", None), "at": e.created_at, "previous": (e.data or {}).get("previous")}
        for e in AuditEvent.objects.filter(
            project_id=version.project_id, action="model_version.promoted", target_type="modelversion",
            target_id=str(version.pk),
        ).select_related("actor").order_by("id")
    ]
    return {
        "model": version,
        "parent": version.parent,
        "run": run,
        "snapshots": list(run.snapshots.select_related("created_by").order_by("id")) if run else [],
        "evals": list(model_evals(version)),
        "promotions": promotions,
        "serving": Project.objects.filter(pk=version.project_id, serving_model=version).exists(),
    }
