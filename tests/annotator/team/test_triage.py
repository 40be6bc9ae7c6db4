"""Triage: the queue can put the traces most likely wrong first, by their lowest machine score
(issue 12). Scores are what the live scorers store (annotator/services/generation.py)."""

from __future__ import annotations

from annotator.models import StepScore
from tests.factories import make_trace


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
