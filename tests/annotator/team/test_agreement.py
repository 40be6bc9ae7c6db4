"""Agreement statistics, checked against published worked examples, and the project's report."""

from __future__ import annotations

import math

import pytest

from annotator.agreement import Rating, cohen_kappa, family_report, krippendorff_alpha
from annotator.services.adjudication import gold_set
from annotator.services.labels import step_label_set, trace_review_set
from tests.annotator.team.conftest import api

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12
# units, values 1-5, missing data marked None. He gives alpha = 0.743 (nominal), 0.815 (ordinal),
# 0.849 (interval).
RELIABILITY_DATA = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _krippendorff_ratings() -> list[Rating]:
    return [Rating(unit, who, v) for who, row in RELIABILITY_DATA.items()
            for unit, v in enumerate(row) if v is not None]


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorffs_worked_example(level, published):
    assert krippendorff_alpha(_krippendorff_ratings(), level=level) == pytest.approx(published, abs=0.0005)


def test_kappa_matches_the_published_worked_example():
    # The classic example (Wikipedia, "Cohen's kappa"): 50 grant proposals read by A and B; 20 both yes,
    # 15 both no, 5 only A yes, 10 only B yes. p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == 1.0
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement is 1: undefined
    assert cohen_kappa([], []) is None


def test_family_report_pairs_consensus_and_gold():
    ratings = [Rating(i, who, v) for i, row in enumerate(
        [{"a": "ok", "b": "ok", "c": "ok"}, {"a": "bad", "b": "bad", "c": "ok"}, {"a": "ok", "b": "ok", "c": "bad"},
         {"a": "bad", "b": "bad", "c": "bad"}]) for who, v in row.items()]
    report = family_report(ratings, gold={0: "ok", 1: "bad"})
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert pairs[("a", "b")]["kappa"] == 1.0 and pairs[("a", "b")]["agreement"] == 1.0
    assert pairs[("a", "c")]["agreement"] == 0.5
    people = {p["annotator"]: p for p in report["per_annotator"]}
    # For a, the others (b, c) split on items 1 and 2, so only items 0 and 3 have a consensus.
    assert people["a"]["consensus_items"] == 2 and people["a"]["agreement_vs_consensus"] == 1.0
    assert people["c"]["kappa_vs_consensus"] == 0.0 and people["c"]["agreement_vs_consensus"] == 0.5
    assert people["c"]["gold_accuracy"] == 0.5 and people["a"]["gold_accuracy"] == 1.0
    assert not math.isnan(report["alpha"])


def test_project_agreement_report(project, users, team, traces):
    t = traces[:4]
    plan = {"ann": ["accept", "reject", "accept", "reject"], "bob": ["accept", "reject", "reject", "reject"]}
    for who, verdicts in plan.items():
        for trace, verdict in zip(t, verdicts, strict=True):
            trace_review_set(trace=trace, annotator=team[who], verdict=verdict, safety_label="safe_without_risk",
                             lead_time_s=10.0 if who == "ann" else 30.0)
    step = t[0].steps.get()
    step_label_set(step=step, annotator=team["ann"], rating=1)
    step_label_set(step=step, annotator=team["bob"], rating=-1)
    gold_set(trace=t[2], actor=users["reviewer"], verdict="accept")
    body = api(users["viewer"]).get(f"/api/projects/{project.pk}/agreement/").json()
    verdict = body["families"]["verdict"]
    assert verdict["items"] == 4 and verdict["annotators"] == ["ann", "bob"]
    assert verdict["pairs"] == [{"a": "ann", "b": "bob", "items": 4, "kappa": 0.5, "agreement": 0.75}]
    assert verdict["alpha"] == krippendorff_alpha(
        [Rating(i, w, v) for w, vs in plan.items() for i, v in enumerate(vs)])
    gold = {p["annotator"]: p["gold_accuracy"] for p in verdict["per_annotator"]}
    assert gold == {"ann": 1.0, "bob": 0.0}
    assert body["families"]["safety_label"]["alpha"] is None  # one value everywhere: undefined
    assert body["families"]["step_rating"]["items"] == 1 and body["families"]["step_rating"]["level"] == "ordinal"
    assert verdict["over_time"] and verdict["over_time"][0]["items"] == 4
    stats = {a["annotator"]: a for a in body["annotators"]}
    assert stats["ann"]["items"] == 4 and stats["ann"]["median_seconds"] == 10.0
    assert stats["bob"]["median_seconds"] == 30.0
