"""Triage: the queue can put the traces most likely wrong first, by their lowest machine score, by
the scorers' disagreement, or confident-but-wrong against the reference (issue 12). Scores are what
the live scorers store (annotator/services/generation.py)."""

from __future__ import annotations

import pytest

from annotator.models import StepScore
from tests.factories import make_prompt, make_trace
from trainer_worker.training import demo_task


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_lowest_score_first_puts_the_wrong_step_on_top_and_unscored_last(project, prompt, client_for):
    traces = [make_trace(project, prompt, steps=["a", "b"]) for _ in range(4)]
    scores = {0: [0.9, 1.0], 1: [1.0, 0.1], 2: None, 3: [0.5, 0.6]}
    for n, values in scores.items():
        for i, value in enumerate(values or []):
            StepScore.objects.create(trace=traces[n], step_index=i, scorer="rule:demo_task", score=value)
    StepScore.objects.create(trace=traces[0], step_index=-1, scorer="rule:demo_task", score=0.0)  # a wrong answer
    base = f"/api/projects/{project.pk}/queue/"
    client = client_for("supervisor")
    assert _ids(client.get(base)) == [t.pk for t in traces]  # arrival order, as before
    triaged = _ids(client.get(base, {"order": "lowest_score"}))
    assert triaged == [traces[0].pk, traces[1].pk, traces[3].pk, traces[2].pk]


def test_an_unknown_order_is_a_400(project, client_for):
    response = client_for("viewer").get(f"/api/projects/{project.pk}/queue/", {"order": "random"})
    assert response.status_code == 400 and response.json()["code"] == "bad_order"


def _score(trace, index: int, scorer: str, value: float) -> None:
    StepScore.objects.create(trace=trace, step_index=index, scorer=scorer, score=value)


def test_disagreement_puts_the_step_the_scorers_disagree_on_most_first(project, prompt, client_for):
    agree, split, lone, answer_split = (make_trace(project, prompt, steps=["a", "b"], answer="45") for _ in range(4))
    for trace, rows in {
        agree: [(0, 0.9, 0.8), (1, 0.7, 0.7)],  # largest spread 0.1
        split: [(0, 0.9, 0.9), (1, 0.9, 0.1)],  # the PRM trusts step 2, the rule checker does not: 0.8
        answer_split: [(0, 0.5, 0.5), (-1, 0.9, 0.5)],  # they disagree on the answer only: 0.4
    }.items():
        for index, prm, rule in rows:
            _score(trace, index, "prm:7", prm)
            _score(trace, index, "rule:demo_task", rule)
    _score(lone, 0, "prm:7", 0.0)  # one scorer: nothing to disagree on, however low
    response = client_for("viewer").get(f"/api/projects/{project.pk}/queue/", {"order": "disagreement"})
    assert _ids(response) == [split.pk, answer_split.pk, agree.pk, lone.pk]
    shown = [row["triage_score"] for row in response.json()["results"]]
    assert shown[:3] == [pytest.approx(0.8), pytest.approx(0.4), pytest.approx(0.1)] and shown[3] is None


def test_confident_wrong_puts_high_scored_wrong_answers_first(project, users, client_for):
    owner = users["owner"]
    sums = [make_prompt(project, actor=owner, text=f"Compute {n} + {n}.", reference=str(2 * n)) for n in (3, 4, 5, 6)]
    # A demo-task request: its reference is the task's (refuse), not a reference_answer string.
    problem = demo_task.make_problems(1, seed=3, klass="disguised", split="train", distinct=True)[0]
    disguised = make_prompt(project, actor=owner, text=problem.prompt, category="safety", reference="")
    haiku = make_prompt(project, actor=owner, text="Write a haiku about autumn.", category="general", reference="")

    sure_wrong = make_trace(project, sums[0], steps=["3 + 3 = 7"], answer="7")
    complied = make_trace(project, disguised, steps=["Sure.", "Step one."], answer=demo_task.COMPLY_ANSWER)
    unsure_wrong = make_trace(project, sums[1], steps=["4 + 4 = 9", "So 9"], answer="9")
    unscored_wrong = make_trace(project, sums[2], steps=["5 + 5 = 11"], answer="11")
    right = make_trace(project, sums[3], steps=["6 + 6 = 12"], answer="12")
    nothing_to_check = make_trace(project, haiku, steps=["Leaves fall."], answer="Red leaves drift down.")
    still_running = make_trace(project, sums[0], steps=["3 + 3 = 6"], status="running")
    for trace, steps in {sure_wrong: [0.9], complied: [0.6, 0.4], unsure_wrong: [0.4, 0.4], right: [1.0, 1.0],
                         nothing_to_check: [0.1]}.items():
        for i, value in enumerate(steps):
            _score(trace, i, "prm:7", value)
    # The answer's own score does not count towards confidence (with it, 0.6 would come before 0.5).
    _score(unsure_wrong, -1, "verifier:8", 1.0)

    base = f"/api/projects/{project.pk}/queue/"
    response = client_for("supervisor").get(base, {"order": "confident_wrong"})
    assert _ids(response) == [sure_wrong.pk, complied.pk, unsure_wrong.pk, unscored_wrong.pk,
                              nothing_to_check.pk, still_running.pk, right.pk]
    shown = [row["triage_score"] for row in response.json()["results"]]
    assert shown == [pytest.approx(0.9), pytest.approx(0.5), pytest.approx(0.4), None, None, None, None]
    # Filters still apply: the safety prompts only.
    assert _ids(client_for("supervisor").get(base, {"order": "confident_wrong", "category": "safety"})) == [complied.pk]


def test_each_order_is_offered_and_others_are_refused(project, prompt, client_for):
    make_trace(project, prompt, steps=["a"], answer="45")
    client = client_for("viewer")
    base = f"/api/projects/{project.pk}/queue/"
    for order in ("arrival", "lowest_score", "disagreement", "confident_wrong"):
        assert client.get(base, {"order": order}).status_code == 200
    response = client.get(base, {"order": "confident"})
    assert response.status_code == 400 and response.json()["code"] == "bad_order"
    assert "confident_wrong" in response.json()["detail"]
