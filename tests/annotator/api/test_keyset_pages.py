"""Cursor (keyset) pages of the lists that grow without bound: traces, the queue, prompts,
corrections, the audit log (annotator/api/pagination.py). Real PostgreSQL, through REST."""

from __future__ import annotations

import base64
import json

import pytest
from django.db import connection

from annotator.api import pagination
from annotator.models import AuditEvent, Step, StepScore, Trace, TraceStatus
from annotator.services.audit import audit_record
from tests.factories import make_prompt, make_trace

pytestmark = pytest.mark.django_db


def _walk(client, url, params=None, *, between=None, limit=5, max_pages=100):
    """Follow `next` links from the first page; call `between(page_number)` before each next fetch."""
    seen, pages = [], 0
    response = client.get(url, {**(params or {}), "limit": limit})
    while True:
        assert response.status_code == 200, response.content[:400]
        body = response.json()
        seen.extend(row["id"] for row in body["results"])
        pages += 1
        assert pages < max_pages
        if not body["next"]:
            return seen, body
        if between:
            between(pages)
        assert "offset=" not in body["next"] and "cursor=" in body["next"]
        response = client.get(body["next"])


def _bulk_traces(project, prompt, n, **fields):
    return Trace.objects.bulk_create(
        [Trace(project=project, prompt=prompt, status=TraceStatus.FINISHED, **fields) for _ in range(n)])


def test_trace_pages_skip_and_repeat_nothing_while_traces_arrive(project, prompt, client_for):
    _bulk_traces(project, prompt, 23)
    before = list(Trace.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    added = []

    def arrive(_page):
        added.extend(t.pk for t in _bulk_traces(project, prompt, 2))

    seen, last = _walk(client_for("viewer"), f"/api/projects/{project.pk}/traces/", between=arrive)
    assert len(seen) == len(set(seen))
    # Arrival order: what arrives while paging is at the end, so it is seen too, once, in order.
    assert seen == before + added
    assert last["count"] == len(before) + len(added) and last["count_exact"] is True


def test_audit_pages_newest_first_do_not_repeat_rows_when_events_are_added_in_front(project, users, client_for):
    for n in range(30):
        audit_record(project=project, actor=users["owner"], action="test.event", target_type="x", target_id=str(n))
    before = list(AuditEvent.objects.filter(project=project).order_by("-id").values_list("id", flat=True))

    def write(_page):  # new events go to the top of a newest-first list
        for _ in range(3):
            audit_record(project=project, actor=users["owner"], action="test.later", target_type="x")

    seen, _ = _walk(client_for("owner"), f"/api/projects/{project.pk}/audit/", between=write, limit=7)
    assert seen == before  # every event that was there, once, newest first; the later ones are above page 1

    # The baseline this replaces: offset pages shift under the same inserts and show rows twice.
    client, offset, by_offset = client_for("owner"), 0, []
    while True:
        page = client.get(f"/api/projects/{project.pk}/audit/", {"limit": 7, "offset": offset}).json()
        by_offset.extend(row["id"] for row in page["results"])
        if not page["next"] or offset > 200:
            break
        write(0)
        offset += 7
    assert len(by_offset) > len(set(by_offset))


def _score(trace, value):
    StepScore.objects.create(trace=trace, step_index=0, scorer="rule:demo_task", score=value)


def test_queue_triage_pages_break_ties_by_id_and_keep_unscored_last(project, prompt, client_for):
    traces = _bulk_traces(project, prompt, 20)
    for n, trace in enumerate(traces):
        if n % 5 != 4:  # every fifth trace is unscored (NULL triage score: last)
            _score(trace, [0.3, 0.7][n % 2])  # two scores, ten-ish traces tied on each
    url = f"/api/projects/{project.pk}/queue/"
    client = client_for("supervisor")
    everything = [row["id"] for row in client.get(url, {"order": "lowest_score", "limit": 500}).json()["results"]]
    added = []

    def arrive(page):  # a tied score, a lower one and an unscored trace arrive between pages
        new = _bulk_traces(project, prompt, 3)
        _score(new[0], 0.3)
        _score(new[1], 0.1)
        added.extend(t.pk for t in new)

    seen, _ = _walk(client, url, {"order": "lowest_score"}, between=arrive, limit=3)
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert set(everything) <= set(seen), "a row that was there from the start was skipped"
    old = [i for i in seen if i not in added]
    assert old == everything  # the original rows keep their order: score, then id within a tie

    scores = {t.pk: s for t, s in zip(traces, [[0.3, 0.7][n % 2] if n % 5 != 4 else None for n in range(20)],
                                      strict=True)}
    expected = sorted(scores, key=lambda i: (scores[i] is None, scores[i] or 0, i))
    assert everything == expected


def test_previous_link_returns_the_page_before(project, prompt, client_for):
    _bulk_traces(project, prompt, 12)
    client = client_for("viewer")
    url = f"/api/projects/{project.pk}/traces/"
    first = client.get(url, {"limit": 4}).json()
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    back = client.get(third["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in second["results"]]
    assert [r["id"] for r in client.get(back["previous"]).json()["results"]] == [r["id"] for r in first["results"]]


def test_queue_confident_wrong_and_disagreement_page_as_they_sort(project, users, client_for):
    prompt = make_prompt(project, actor=users["owner"], text="Compute 1 + 1.", reference="2")
    traces = [make_trace(project, prompt, steps=["1. 1 + 1 = 2"], answer=a) for a in ["3", "2", "5", None, "2", "4"]]
    for n, t in enumerate(traces):
        StepScore.objects.create(trace=t, step_index=0, scorer="a", score=0.5)
        StepScore.objects.create(trace=t, step_index=0, scorer="b", score=0.5 + 0.1 * (n % 3))
    client = client_for("supervisor")
    url = f"/api/projects/{project.pk}/queue/"
    for order in ("confident_wrong", "disagreement"):
        whole = [r["id"] for r in client.get(url, {"order": order, "limit": 500}).json()["results"]]
        seen, _ = _walk(client, url, {"order": order}, limit=2)
        assert seen == whole and len(whole) == 6


def test_prompt_and_correction_lists_page_by_cursor(project, users, client_for, trace):
    for n in range(8):
        make_prompt(project, actor=users["owner"], text=f"Prompt {n}")
    seen, last = _walk(client_for("viewer"), f"/api/projects/{project.pk}/prompts/", limit=3)
    assert seen == sorted(seen) and len(seen) == 9 and last["count"] == 9 and last["count_exact"]
    assert all("trace_count" in r for r in client_for("viewer").get(
        f"/api/projects/{project.pk}/prompts/").json()["results"])
    client = client_for("supervisor")
    for n in range(3):
        fresh = client.get(f"/api/projects/{project.pk}/traces/{trace.pk}/").json()
        r = client.post(f"/api/projects/{project.pk}/traces/{trace.pk}/corrections/",
                        {"step_index": 0, "text": f"1. fixed {n}", "expected_version": fresh["version"]},
                        format="json")
        assert r.status_code == 201, r.content
    seen, _ = _walk(client, f"/api/projects/{project.pk}/corrections/", limit=2)
    assert len(seen) == 3 and seen == sorted(seen)


def test_step_counts_on_a_page_are_the_traces_own(project, prompt, client_for):
    a = make_trace(project, prompt, steps=["x", "y", "z"])
    b = Trace.objects.create(project=project, prompt=prompt)
    rows = {r["id"]: r for r in client_for("viewer").get(f"/api/projects/{project.pk}/traces/").json()["results"]}
    assert (rows[a.pk]["step_count"], rows[b.pk]["step_count"]) == (3, 0)
    queue = {r["id"]: r for r in client_for("viewer").get(f"/api/projects/{project.pk}/queue/").json()["results"]}
    assert (queue[a.pk]["step_count"], queue[b.pk]["step_count"]) == (3, 0)


def test_count_is_exact_up_to_the_cap_and_an_estimate_above(project, prompt, client_for):
    n = pagination.COUNT_CAP + 50
    _bulk_traces(project, prompt, n)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE annotator_trace")
    client = client_for("viewer")
    body = client.get(f"/api/projects/{project.pk}/traces/", {"limit": 2}).json()
    assert body["count_exact"] is False
    assert body["count"] > pagination.COUNT_CAP and abs(body["count"] - n) < 0.2 * n
    Trace.objects.filter(pk__in=list(Trace.objects.order_by("id").values_list("id", flat=True)[:5])).update(
        status=TraceStatus.FAILED)
    failed = client.get(f"/api/projects/{project.pk}/traces/", {"status": "failed"}).json()
    assert (failed["count"], failed["count_exact"]) == (5, True)
    queue = client.get(f"/api/projects/{project.pk}/queue/", {"limit": 2}).json()
    assert queue["count_exact"] is False and queue["count"] > pagination.COUNT_CAP
    # The queue's counters are kept by PostgreSQL (migrations 0014, 0015): exact above the cap too.
    counts = client.get(f"/api/projects/{project.pk}/queue/counts/").json()
    assert (counts["traces"], counts["unreviewed"], counts["disputed"], counts["totals_exact"]) == (n, n, 0, True)


def test_queue_counts_are_exact_on_a_small_project(project, prompt, client_for):
    _bulk_traces(project, prompt, 4)
    _bulk_traces(project, prompt, 2, review_count=1, disputed=True)
    counts = client_for("viewer").get(f"/api/projects/{project.pk}/queue/counts/").json()
    assert {k: counts[k] for k in ("traces", "unreviewed", "reviewed", "disputed", "totals_exact")} == {
        "traces": 6, "unreviewed": 4, "reviewed": 2, "disputed": 2, "totals_exact": True}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(body) -> str:
    return _b64(json.dumps(body).encode())


BAD_CURSORS = {
    "not base64": "!!!not-base64!!!",
    "base64 of junk": _b64(b"\xff\xfe\x00junk"),
    "not json": _b64(b"hello"),
    "json, not an object": _cursor([1, 2]),
    "keys not a list": _cursor({"o": "id", "k": 5}),
    "string id": _cursor({"o": "id", "k": ["5"]}),
    "float id": _cursor({"o": "id", "k": [5.5]}),
    "bool id": _cursor({"o": "id", "k": [True]}),
    "null id": _cursor({"o": "id", "k": [None]}),
    "huge id": _cursor({"o": "id", "k": [2**70]}),
    "nul in a value": _cursor({"o": "id", "k": ["\u0000"]}),
    "nul in the ordering": _cursor({"o": "id\u0000", "k": [1]}),
    "another list's ordering": _cursor({"o": "-id", "k": [1]}),
    "two keys for one": _cursor({"o": "id", "k": [1, 2]}),
    "unknown direction": _cursor({"o": "id", "k": [1], "d": "sideways"}),
    "extra fields": _cursor({"o": "id", "k": [1], "x": 1}),
    "NaN": _b64(b'{"o":"id","k":[NaN]}'),
    "too long": "A" * 5000,
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_bad_cursor_is_a_clear_400(project, trace, client_for, cursor):
    response = client_for("viewer").get(f"/api/projects/{project.pk}/traces/", {"cursor": cursor})
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "bad_cursor" and "cursor" in body["detail"]


def test_a_triage_cursor_checks_its_score_types(project, trace, client_for):
    url = f"/api/projects/{project.pk}/queue/"
    client = client_for("viewer")
    sig = "triage_score,id"
    for values in (["low", 1], [float("inf"), 1], [1e400, 1], [0.5, "1"]):
        raw = _b64(json.dumps({"o": sig, "k": values}).encode())
        assert client.get(url, {"order": "lowest_score", "cursor": raw}).json()["code"] == "bad_cursor"
    ok = _cursor({"o": sig, "k": [None, 0]})
    assert client.get(url, {"order": "lowest_score", "cursor": ok}).status_code == 200
    # A lowest_score cursor on the arrival order: another ordering.
    assert client.get(url, {"cursor": ok}).json()["code"] == "bad_cursor"


def test_a_nul_byte_in_the_query_and_odd_limits_are_refused(project, trace, client_for):
    client = client_for("viewer")
    url = f"/api/projects/{project.pk}/traces/"
    assert client.get(url + "?cursor=ab%00cd").status_code == 400
    for bad in ({"limit": "0"}, {"limit": "-3"}, {"limit": "ten"}, {"offset": "-1"}, {"offset": "x"},
                {"cursor": _cursor({"o": "id", "k": [1]}), "offset": "5"}):
        response = client.get(url, bad)
        assert response.status_code == 400 and response.json()["code"] == "invalid", bad
    assert len(client.get(url, {"limit": "100000"}).json()["results"]) == 1  # capped, not refused


def test_a_cursor_past_the_end_is_an_empty_last_page(project, trace, client_for):
    body = client_for("viewer").get(f"/api/projects/{project.pk}/traces/",
                                    {"cursor": _cursor({"o": "id", "k": [2**63 - 1]})}).json()
    assert (body["results"], body["next"]) == ([], None)


def test_steps_are_not_needed_for_a_page(project, prompt, client_for, django_assert_max_num_queries):
    for _ in range(10):
        make_trace(project, prompt, steps=["a", "b"])
    assert Step.objects.count() == 20
    # One query for the page, one for the count (+ the session/auth ones): not one per row.
    with django_assert_max_num_queries(8):
        body = client_for("viewer").get(f"/api/projects/{project.pk}/traces/").json()
    assert [r["step_count"] for r in body["results"]] == [2] * 10


def test_a_count_that_overruns_its_budget_answers_the_estimate_and_leaves_the_request_usable(project, prompt):
    _bulk_traces(project, prompt, 60)
    slow = Trace.objects.filter(project=project).extra(
        where=["(SELECT 1 FROM pg_sleep(0.005 + 0 * annotator_trace.id)) = 1"])  # per row: not an InitPlan
    n, exact = pagination.fast_count(slow, budget_ms=20)  # 60 rows x 5 ms: cancelled by PostgreSQL
    assert exact is False and n >= 0
    assert Trace.objects.filter(project=project).count() == 60  # the transaction goes on
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"  # and has no timeout left behind
    assert pagination.fast_count(slow, budget_ms=5000) == (60, True)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"


def test_first_pages_start_at_the_projects_own_rows_when_another_project_has_older_and_newer_ones(
        project, other_project, prompt, users, client_for):
    theirs = make_prompt(other_project, actor=users["outsider"])
    _bulk_traces(other_project, theirs, 30)
    mine = [t.pk for t in _bulk_traces(project, prompt, 7)]
    _bulk_traces(other_project, theirs, 30)
    body = client_for("viewer").get(f"/api/projects/{project.pk}/traces/", {"limit": 5}).json()
    assert [r["id"] for r in body["results"]] == mine[:5] and body["count"] == 7
    assert [r["id"] for r in client_for("viewer").get(body["next"]).json()["results"]] == mine[5:]
    assert [r["id"] for r in client_for("viewer").get(f"/api/projects/{project.pk}/queue/",
                                                      {"offset": 2, "limit": 3}).json()["results"]] == mine[2:5]
    for n in range(3):
        audit_record(project=other_project, actor=users["outsider"], action="their.event", target_type="x")
    log = client_for("owner").get(f"/api/projects/{project.pk}/audit/", {"limit": 2}).json()["results"]
    assert log and all(r["action"] != "their.event" for r in log)
    assert [r["id"] for r in log] == list(AuditEvent.objects.filter(project=project).order_by("-id")
                                          .values_list("id", flat=True)[:2])
