"""The triage keys on Trace (``lowest_score``, ``scorer_spread``, ``mean_step_score``; migration
0010's triggers keep them) equal what the StepScores give, however the scores are written: live
scoring (the generation's upsert), rescoring a step, a new scorer, a batch INSERT, a deleted step;
and the queue's triage orders put the traces in the order the scores themselves give."""

from __future__ import annotations

import random

import pytest
from django.db import connection

from annotator import selectors, supervision
from annotator.models import Step, StepScore, Trace
from annotator.services import generation
from tests.factories import make_prompt, make_trace

KEYS = ("lowest_score", "scorer_spread", "mean_step_score")


def _from_scores(project, user, order: str) -> dict[int, float | None]:
    """Each trace's triage score as the correlated subqueries over StepScore compute it."""
    qs = selectors.queue_list(project, user, order=order, from_scores=True)
    return dict(qs.values_list("id", "triage_score"))


def _assert_keys_match_the_scores(project, user) -> None:
    expected = {
        "lowest_score": _from_scores(project, user, "lowest_score"),
        "scorer_spread": _from_scores(project, user, "disagreement"),
    }
    # The mean of the step scores, for every trace (confident_wrong shows it for wrong answers only).
    means = {t.pk: None for t in Trace.objects.filter(project=project)}
    for trace_id, value in (StepScore.objects.filter(trace__project=project, step_index__gte=0)
                            .values("trace_id").annotate(m=selectors.Avg("score")).values_list("trace_id", "m")):
        means[trace_id] = value
    expected["mean_step_score"] = means
    for trace_id, *stored in Trace.objects.filter(project=project).values_list("id", *KEYS):
        for key, value in zip(KEYS, stored, strict=True):
            want = expected[key][trace_id]
            assert (value is None) == (want is None), (trace_id, key, value, want)
            if want is not None:
                assert value == pytest.approx(want, abs=1e-12), (trace_id, key)


def _live_score(trace, index: int, steps: list[str], answer: str | None = None, names=("rule:demo_task",)):
    """What the generation does when a step (or the answer) closes: the real scorers, the real upsert."""
    step = None if index < 0 else Step.objects.get(trace=trace, index=index)
    scorers = supervision.Scorers(tuple(names), trace.prompt.messages)
    return generation._score(trace, step, index, scorers, steps, answer)


def test_live_scoring_rescoring_and_a_new_scorer_keep_the_keys_equal_to_the_scores(project, users, prompt):
    user = users["supervisor"]
    steps = ["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 44"]  # the demo task's checker: step 3 is wrong
    trace = make_trace(project, prompt, steps=steps, answer=None, status="running")
    other = make_trace(project, prompt, steps=["1. 12 + 30 = 42"], answer="45")
    assert Trace.objects.filter(pk=trace.pk).values_list(*KEYS).get() == (None, None, None)

    for i in range(3):
        _live_score(trace, i, steps[: i + 1])
    _live_score(trace, supervision.ANSWER_INDEX, steps, answer="44")
    stored = Trace.objects.get(pk=trace.pk)
    assert stored.lowest_score == 0.0  # the wrong answer (and the wrong step)
    assert stored.scorer_spread is None  # one scorer: nothing to disagree on
    _assert_keys_match_the_scores(project, user)

    # Rescoring: the same (step, scorer) written again (the upsert's UPDATE), here by hand to a new value.
    StepScore.objects.bulk_create(
        [StepScore(trace=trace, step_index=2, scorer="rule:demo_task", score=0.75)],
        update_conflicts=True, unique_fields=["trace", "step_index", "scorer"], update_fields=["score"])
    StepScore.objects.filter(trace=trace, step_index=-1).update(score=0.5)
    _assert_keys_match_the_scores(project, user)
    assert Trace.objects.get(pk=trace.pk).lowest_score == pytest.approx(0.5)

    # A new scorer on the same steps: now two scorers per step, so a spread.
    StepScore.objects.bulk_create([StepScore(trace=trace, step_index=i, scorer="prm:7", score=v)
                                   for i, v in enumerate([0.9, 0.2, 0.6])])
    StepScore.objects.create(trace=other, step_index=0, scorer="prm:7", score=0.3)
    _assert_keys_match_the_scores(project, user)
    assert Trace.objects.get(pk=trace.pk).scorer_spread == pytest.approx(0.8)  # step 2: 1.0 vs 0.2

    # A batch INSERT in SQL (as a relay of many traces' scores would write), and deleted scores.
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO annotator_stepscore (trace_id, step_index, scorer, score, detail, created_at) "
                       "VALUES (%s, 0, 'verifier:8', 0.05, '', now()), (%s, -1, 'verifier:8', 1.0, '', now())",
                       [trace.pk, other.pk])
    _assert_keys_match_the_scores(project, user)
    StepScore.objects.filter(trace=trace, scorer="verifier:8").delete()
    Step.objects.filter(trace=trace, index=2).delete()  # its scores go with it (cascade)
    _assert_keys_match_the_scores(project, user)
    StepScore.objects.filter(trace=other).delete()
    assert Trace.objects.filter(pk=other.pk).values_list(*KEYS).get() == (None, None, None)


@pytest.mark.parametrize("order", ["lowest_score", "disagreement", "confident_wrong"])
def test_triage_orders_from_the_columns_equal_the_orders_from_the_scores(project, users, order):
    user = users["supervisor"]
    rng = random.Random(14)
    prompts = [make_prompt(project, actor=users["owner"], text=f"Compute {n} + {n}.", reference=str(2 * n))
               for n in range(5)]
    rows = []
    for n in range(60):
        p = prompts[n % 5]
        answer = str(2 * (n % 5)) if n % 3 else "wrong"
        trace = make_trace(project, p, steps=["a", "b", "c"], answer=answer,
                           status="finished" if n % 7 else "stopped")
        for index in (-1, 0, 1, 2):
            for scorer in ("rule:demo_task", "prm:7", "verifier:8"):
                if n % 6 and rng.random() < 0.4:  # every sixth trace unscored
                    # Coarse values: many ties, which go oldest first.
                    rows.append(StepScore(trace=trace, step_index=index, scorer=scorer, score=rng.randint(0, 4) / 4))
    StepScore.objects.bulk_create(rows)
    columns = list(selectors.queue_list(project, user, order=order).values_list("id", "triage_score"))
    scores = list(selectors.queue_list(project, user, order=order, from_scores=True)
                  .values_list("id", "triage_score"))
    assert [i for i, _ in columns] == [i for i, _ in scores]
    assert [s for _, s in columns] == pytest.approx([s for _, s in scores])
    assert any(s is None for _, s in columns) and any(s is not None for _, s in columns)
