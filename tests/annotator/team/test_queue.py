"""The queue a supervisor works through: mine / unreviewed / reviewed / verdict / disagreement,
counters, and the next item after saving a review."""

from __future__ import annotations

from annotator.services.adjudication import adjudication_set
from annotator.services.assignments import assignments_distribute
from annotator.services.labels import trace_review_set
from tests.annotator.team.conftest import api


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_my_queue_lists_what_is_left_and_done_with_counters(project, users, team, prompts, traces):
    assignments_distribute(project=project, actor=users["owner"], annotators=["supervisor", "ann", "bob"],
                           overlap=2)
    ann = api(team["ann"])
    base = f"/api/projects/{project.pk}/queue/"
    mine = _ids(ann.get(base, {"mine": "true"}))
    assert len(mine) == 4
    first = mine[0]
    assert ann.put(f"/api/projects/{project.pk}/traces/{first}/reviews/", {"verdict": "accept"},
                   format="json").status_code == 200
    assert _ids(ann.get(base, {"mine": "true", "reviewed": "false"})) == mine[1:]
    assert _ids(ann.get(base, {"mine": "true", "reviewed": "true"})) == [first]
    counts = ann.get(f"{base}counts/").json()
    assert counts | {} == {**counts, "assigned": 4, "done": 1, "left": 3, "traces": 6, "reviewed": 1,
                           "unreviewed": 5, "disputed": 0}
    rows = ann.get(base, {"mine": "true"}).json()["results"]
    assert rows[0]["my_verdict"] == "accept" and rows[0]["mine"] is True and rows[0]["step_count"] == 1
    assert rows[1]["my_verdict"] is None


def test_next_item_opens_after_a_saved_review_and_n_skips(project, users, team, prompts, traces):
    assignments_distribute(project=project, actor=users["owner"], annotators=["ann"], overlap=1,
                           prompts=[p.pk for p in prompts[:3]])
    ann = api(team["ann"])
    url = f"/api/projects/{project.pk}/queue/next/"
    first = ann.get(url).json()
    assert first["trace"]["id"] == traces[0].pk and first["left"] == 3
    # `n` (skip): the one after the current, without reviewing it
    assert ann.get(url, {"after": traces[0].pk}).json()["trace"]["id"] == traces[1].pk
    # after saving a review, the next one is the first left, wrapping round past the end
    ann.put(f"/api/projects/{project.pk}/traces/{traces[1].pk}/reviews/", {"verdict": "accept"}, format="json")
    assert ann.get(url, {"after": traces[1].pk}).json()["trace"]["id"] == traces[2].pk
    assert ann.get(url, {"after": traces[2].pk}).json()["trace"]["id"] == traces[0].pk
    for t in (traces[0], traces[2]):
        ann.put(f"/api/projects/{project.pk}/traces/{t.pk}/reviews/", {"verdict": "reject"}, format="json")
    done = ann.get(url).json()
    assert done == {"trace": None, "prompt": None, "left": 0}


def test_next_offers_an_assigned_prompt_without_a_trace(project, users, team, prompts):
    assignments_distribute(project=project, actor=users["owner"], annotators=["ann"], overlap=1,
                           prompts=[prompts[4].pk])
    body = api(team["ann"]).get(f"/api/projects/{project.pk}/queue/next/").json()
    assert body["trace"] is None and body["prompt"]["id"] == prompts[4].pk


def test_verdict_and_disagreement_filters_and_adjudication(project, users, team, prompts, traces):
    t0, t1, t2 = traces[:3]
    for who, trace, verdict in [("ann", t0, "accept"), ("bob", t0, "reject"), ("ann", t1, "accept"),
                                ("bob", t1, "accept"), ("ann", t2, "reject")]:
        trace_review_set(trace=trace, annotator=team[who], verdict=verdict)
    viewer = api(users["viewer"])
    base = f"/api/projects/{project.pk}/queue/"
    assert _ids(viewer.get(base, {"disagreement": "true"})) == [t0.pk]
    assert _ids(viewer.get(base, {"verdict": "accept"})) == [t1.pk]
    assert _ids(viewer.get(base, {"verdict": "reject"})) == [t2.pk]
    assert _ids(viewer.get(base, {"reviewed": "false"})) == [t.pk for t in traces[3:]]
    # labels disagreeing count too, not only verdicts
    trace_review_set(trace=t1, annotator=team["bob"], verdict="accept", safety_label="unsafe")
    trace_review_set(trace=t1, annotator=team["ann"], verdict="accept", safety_label="safe_without_risk")
    assert _ids(viewer.get(base, {"disagreement": "true"})) == [t0.pk, t1.pk]
    adjudication_set(trace=t0, actor=users["reviewer"], verdict="reject", note="step 1 is wrong")
    assert _ids(viewer.get(base, {"disagreement": "true"})) == [t1.pk]
    assert _ids(viewer.get(base, {"verdict": "reject"})) == [t0.pk, t2.pk]
    detail = viewer.get(f"/api/projects/{project.pk}/traces/{t0.pk}/").json()
    assert detail["adjudication"]["verdict"] == "reject" and detail["adjudication"]["adjudicator"]["username"] == (
        "reviewer")
    assert detail["verdict"] == "reject" and detail["disputed"] is False and detail["review_count"] == 2


def test_bad_queue_filters_get_a_clear_error(project, users):
    viewer = api(users["viewer"])
    for query in ({"verdict": "maybe"}, {"mine": "perhaps"}, {"category": "cooking"}):
        response = viewer.get(f"/api/projects/{project.pk}/queue/", query)
        assert response.status_code == 400 and response.json()["code"] == "invalid", query
    assert viewer.get(f"/api/projects/{project.pk}/queue/next/", {"after": "x"}).status_code == 400


def test_clearing_a_label_or_a_review_takes_it_back(project, users, team, traces):
    ann = api(team["ann"])
    base = f"/api/projects/{project.pk}/traces/{traces[0].pk}"
    assert ann.put(f"{base}/steps/0/label/", {"rating": -1}, format="json").status_code == 200
    assert ann.delete(f"{base}/steps/0/label/").status_code == 204
    assert ann.get(f"{base}/steps/0/label/").json() == []
    ann.put(f"{base}/reviews/", {"verdict": "reject"}, format="json")
    assert api(users["viewer"]).get(f"{base}/").json()["review_count"] == 1
    assert ann.delete(f"{base}/reviews/").status_code == 204
    detail = api(users["viewer"]).get(f"{base}/").json()
    assert (detail["review_count"], detail["verdict"], detail["reviews"]) == (0, "", [])
    assert ann.delete(f"{base}/reviews/").status_code == 204  # nothing left: still fine
    assert api(users["viewer"]).delete(f"{base}/reviews/").status_code == 403


def test_counters_say_which_prompts_are_still_to_generate_as_traces_come_and_go(project, users, team, prompts):
    from annotator.models import Prompt, Trace
    from tests.factories import make_trace

    assignments_distribute(project=project, actor=users["owner"], annotators=["ann"], overlap=1,
                           prompts=[p.pk for p in prompts[:3]])
    ann = api(team["ann"])
    counts_url = f"/api/projects/{project.pk}/queue/counts/"
    assert ann.get(counts_url).json() | {} == {**ann.get(counts_url).json(), "prompts_without_trace": 3,
                                               "assigned": 0, "mine_exact": True}
    trace = make_trace(project, prompts[0], steps=["a"], answer="0")
    make_trace(project, prompts[1], steps=["a"], answer="2")
    make_trace(project, prompts[5], steps=["a"], answer="10")  # not assigned to ann
    counts = ann.get(counts_url).json()
    assert (counts["prompts_without_trace"], counts["assigned"], counts["left"]) == (1, 2, 2)
    assert ann.get(f"/api/projects/{project.pk}/queue/next/").json()["trace"]["id"] == trace.pk
    assert list(Prompt.objects.filter(project=project, has_trace=False).values_list("pk", flat=True)) == [
        p.pk for p in (prompts[2], prompts[3], prompts[4])]
    Trace.objects.filter(prompt__in=prompts[:2]).delete()  # the prompts have no trace again
    assert ann.get(counts_url).json()["prompts_without_trace"] == 3
    body = ann.get(f"/api/projects/{project.pk}/queue/next/").json()
    assert body["trace"] is None and body["prompt"]["id"] == prompts[0].pk


def test_personal_counters_stay_exact_above_the_old_cap(project, users, team, prompts, traces, monkeypatch):
    from annotator import selectors

    assignments_distribute(project=project, actor=users["owner"], annotators=["ann"], overlap=1)
    ann = api(team["ann"])
    for t in traces[:2]:
        ann.put(f"/api/projects/{project.pk}/traces/{t.pk}/reviews/", {"verdict": "accept"}, format="json")
    base = f"/api/projects/{project.pk}/queue/"
    # Six traces over a cap of three: the old path's answers were PostgreSQL's estimates, and said so.
    monkeypatch.setattr(selectors, "MINE_COUNT_CAP", 3)
    old = selectors.queue_counts(project, team["ann"], from_counters=False)
    assert old["mine_exact"] is False and old["assigned"] >= 4
    # The counters are exact at any size: what the person sees is what there is.
    counts = ann.get(f"{base}counts/").json()
    assert (counts["assigned"], counts["done"], counts["left"], counts["mine_exact"]) == (6, 2, 4, True)
    page = ann.get(base, {"mine": "true", "reviewed": "false"}).json()
    assert (page["count"], page["count_exact"], len(page["results"])) == (4, True, 4)
    assert ann.get(base, {"mine": "true", "reviewed": "true"}).json()["count"] == 2
    assert ann.get(f"{base}next/").json()["left"] == 4
    # With another filter the page is counted (capped at MINE_COUNT_CAP, an estimate above it).
    cat = ann.get(base, {"mine": "true", "category": traces[0].prompt.category}).json()
    n = len(cat["results"])
    assert cat["count_exact"] is (n <= 3) and (cat["count"] == n if n <= 3 else cat["count"] >= 4)
