"""Adjudication: a reviewer resolves conflicting labels and approves or rejects corrections; snapshots
can take adjudicated records only; verifier data takes the consensus label with annotator counts."""

from __future__ import annotations

from annotator.datasets.corpus import CorpusFilter, build_corpus
from annotator.datasets.materialise import materialise
from annotator.models import Correction, Trace, TraceStatus
from annotator.services.adjudication import adjudication_set, correction_adjudicate
from annotator.services.corrections import correction_create
from annotator.services.labels import trace_review_set
from tests.annotator.team.conftest import api


def _finish_branch(correction: Correction, answer: str) -> None:
    Trace.objects.filter(pk=correction.corrected_trace_id).update(status=TraceStatus.FINISHED, final_answer=answer)


def _trace_ids(kind: str, project, **filters) -> list[list[str]]:
    corpus = build_corpus(project, kind=kind, filters=CorpusFilter.from_json(filters))
    return [r["trace_ids"] for r in materialise(kind, corpus)]


def test_snapshots_can_take_adjudicated_records_only(project, users, team, traces):
    disputed, agreed, edited, pending, refused = traces[:5]
    trace_review_set(trace=disputed, annotator=team["ann"], verdict="accept")
    trace_review_set(trace=disputed, annotator=team["bob"], verdict="reject")
    for who in ("ann", "bob"):
        trace_review_set(trace=agreed, annotator=team[who], verdict="accept")
    # Without adjudication the disputed trace is nobody's SFT data; the agreed one is.
    assert _trace_ids("sft", project) == [[str(agreed.pk)]]
    adjudication_set(trace=disputed, actor=users["reviewer"], verdict="accept")
    assert _trace_ids("sft", project) == [[str(disputed.pk)], [str(agreed.pk)]]
    assert _trace_ids("sft", project, adjudicated_only=True) == [[str(disputed.pk)]]

    corrections = {}
    for name, trace in (("approved", edited), ("pending", pending), ("rejected", refused)):
        corrections[name] = correction_create(trace=trace, step_index=0, text="1. fixed", expected_version=1,
                                              author=team["ann"])
        _finish_branch(corrections[name], "fixed")
    correction_adjudicate(correction=corrections["approved"], actor=users["reviewer"], decision="approve")
    correction_adjudicate(correction=corrections["rejected"], actor=users["reviewer"], decision="reject",
                          note="the original was right")
    pair = lambda c: [str(c.corrected_trace_id), str(c.original_trace_id)]  # noqa: E731
    # A rejected correction is never a pair; a pending one only without adjudicated_only.
    assert _trace_ids("preference", project) == [pair(corrections["approved"]), pair(corrections["pending"])]
    assert _trace_ids("preference", project, adjudicated_only=True) == [pair(corrections["approved"])]


def test_verifier_data_takes_the_consensus_label_with_annotator_counts(project, users, team, traces):
    trace = traces[0]
    for who, label in (("ann", "unsafe"), ("bob", "unsafe"), ("supervisor", "safe_with_refusal")):
        trace_review_set(trace=trace, annotator=team[who], verdict="reject", safety_label=label)
    tie = traces[1]
    for who, label in (("ann", "unsafe"), ("bob", "safe_with_refusal")):
        trace_review_set(trace=tie, annotator=team[who], verdict="reject", safety_label=label)
    corpus = build_corpus(project, kind="verifier_safety")
    records = {r["trace_ids"][0]: r for r in materialise("verifier_safety", corpus)}
    assert set(records) == {str(trace.pk)}  # a tie has no consensus
    rec = records[str(trace.pk)]
    assert (rec["label"], rec["score"], rec["annotator_count"], rec["agreeing_count"], rec["adjudicated"]) == (
        "unsafe", 0.0, 3, 2, False)
    assert sorted(rec["annotators"]) == ["ann", "bob"]
    adjudication_set(trace=tie, actor=users["reviewer"], verdict="reject", safety_label="safe_with_refusal")
    corpus = build_corpus(project, kind="verifier_safety")
    records = {r["trace_ids"][0]: r for r in materialise("verifier_safety", corpus)}
    resolved = records[str(tie.pk)]
    assert (resolved["label"], resolved["annotator_count"], resolved["agreeing_count"], resolved["adjudicated"]) == (
        "safe_with_refusal", 2, 1, True)
    assert resolved["annotators"] == ["bob", "reviewer"]


def test_only_reviewers_adjudicate_and_bad_input_changes_nothing(project, users, team, traces):
    url = f"/api/projects/{project.pk}/traces/{traces[0].pk}/adjudication/"
    assert api(users["supervisor"]).put(url, {"verdict": "accept"}, format="json").status_code == 403
    response = api(users["reviewer"]).put(url, {"verdict": "maybe"}, format="json")
    assert response.status_code == 400 and "verdict" in response.json()["detail"]
    response = api(users["reviewer"]).put(url, {"verdict": "accept", "safety_label": "fine"}, format="json")
    assert response.status_code == 400
    assert not Trace.objects.get(pk=traces[0].pk).verdict
    ok = api(users["reviewer"]).put(url, {"verdict": "accept", "note": "checked"}, format="json")
    assert ok.status_code == 200 and ok.json()["adjudicator"]["username"] == "reviewer"
    assert Trace.objects.get(pk=traces[0].pk).verdict == "accept"
    correction = correction_create(trace=traces[1], step_index=0, text="1. x", expected_version=1,
                                   author=team["ann"])
    adj = api(users["reviewer"]).post(f"/api/projects/{project.pk}/corrections/{correction.pk}/adjudicate/",
                                      {"decision": "reject", "note": "x is wrong"}, format="json")
    assert adj.status_code == 200
    assert (adj.json()["status"], adj.json()["adjudicated_by"]["username"]) == ("rejected", "reviewer")
