"""The confident_wrong order's keys on Trace (the answer check cached as ``answer_verdict``, and the
``answer_rank`` / ``wrong_confidence`` migration 0013's trigger keeps from it; annotator/answers.py):
a trace that ends is checked when it ends, a prompt edit checks its traces again, writes around the
services are checked by the queue, the order is the one the Python check over every trace gives
(``queue_list(from_scores=True)``, the path before), and a cursor walk returns each trace once."""

from __future__ import annotations

import random

import pytest
from django.db import connection

from annotator import answers, selectors
from annotator.api.pagination import keyset_parts, ordering_keys
from annotator.models import ModelVersion, StepScore, Trace, TraceStatus
from annotator.services import generation
from tests.factories import make_prompt, make_trace
from tests.support.fake_vllm import FakeVLLM

pytestmark = pytest.mark.django_db

QUEUE = "/api/projects/{}/queue/"


def _keys(trace) -> tuple:
    return Trace.objects.filter(pk=trace.pk).values_list("answer_verdict", "answer_rank", "wrong_confidence").get()


def _order(project, user, *, before: bool = False) -> list[tuple[int, float | None]]:
    qs = selectors.queue_list(project, user, order="confident_wrong", from_scores=before)
    return list(qs.values_list("id", "triage_score"))


def _walk(client, url, params, *, limit):
    seen, pages, response = [], [], client.get(url, {**params, "limit": limit})
    while True:
        assert response.status_code == 200, response.content[:400]
        body = response.json()
        pages.append(body)
        seen.extend(row["id"] for row in body["results"])
        assert len(pages) < 200
        if not body["next"]:
            return seen, pages
        response = client.get(body["next"])


def test_a_trace_that_ends_is_checked_as_it_ends_and_takes_its_place(project, users, prompt, client_for):
    """Generation to the end (a vLLM server's stream, in this thread): the answer's verdict is stored
    by the generation's end, before anyone reads the queue."""
    supervisor = client_for("supervisor")
    ids = {}
    for answer in ("44", "45"):  # the prompt is "Compute 12 + 30 - 5 + 8." (45)
        with FakeVLLM(completion=f"<think>\n1. 12 + 30 = 42\n2. 42 - 5 = 37\n3. 37 + 8 = {answer}\n</think>\n{answer}"
                      ) as fake:
            model = ModelVersion.objects.create(project=project, name=f"v{answer}", base_model="org/base",
                                                backend="vllm", backend_options={"base_url": fake.base_url})
            created = supervisor.post(f"/api/projects/{project.pk}/traces/",
                                      {"prompt": prompt.pk, "model_version": model.pk}, format="json")
            assert created.status_code == 201, created.json()
            ids[answer] = created.json()["id"]
            queued = Trace.objects.get(pk=ids[answer])
            assert _keys(queued) == (None, 1, None)  # not finished: in the middle group, whatever its answer
            generation.trace_generate(trace_id=ids[answer])
    wrong, right = Trace.objects.get(pk=ids["44"]), Trace.objects.get(pk=ids["45"])
    assert wrong.status == right.status == TraceStatus.FINISHED and wrong.final_answer == "44"
    assert _keys(wrong)[:2] == (answers.WRONG, 0) and _keys(right) == (answers.RIGHT, 2, None)
    unfinished = make_trace(project, prompt, steps=["1. 12 + 30 = 42"], status="running")
    StepScore.objects.create(trace=wrong, step_index=0, scorer="prm:1", score=0.75)
    assert _keys(wrong) == (answers.WRONG, 0, pytest.approx(0.75))  # the scores' trigger, then the rank's
    response = supervisor.get(QUEUE.format(project.pk), {"order": "confident_wrong"})
    assert [(r["id"], r["triage_score"]) for r in response.json()["results"]] == [
        (wrong.pk, pytest.approx(0.75)), (unfinished.pk, None), (right.pk, None)]


def test_editing_a_prompts_reference_re_ranks_its_traces(project, users, client_for):
    owner = client_for("owner")
    capital = make_prompt(project, actor=users["owner"], text="Name the capital of France.", category="general",
                          reference="Paris")
    other = make_prompt(project, actor=users["owner"], text="Name the capital of Italy.", category="general",
                        reference="Rome")
    paris, lyon, rome = (make_trace(project, p, steps=["I recall it."], answer=a)
                         for p, a in ((capital, "Paris"), (capital, "Lyon"), (other, "Rome")))
    supervisor = client_for("supervisor")
    url = QUEUE.format(project.pk)

    def order():
        return [r["id"] for r in supervisor.get(url, {"order": "confident_wrong"}).json()["results"]]

    assert order() == [lyon.pk, paris.pk, rome.pk]
    patched = owner.patch(f"/api/projects/{project.pk}/prompts/{capital.pk}/", {"reference_answer": "Lyon"},
                          format="json")
    assert patched.status_code == 200, patched.json()
    # Checked again by the edit itself (not left to the queue), the other prompt's trace untouched.
    assert [_keys(t)[:2] for t in (paris, lyon, rome)] == [(answers.WRONG, 0), (answers.RIGHT, 2),
                                                           (answers.RIGHT, 2)]
    assert order() == [paris.pk, lyon.pk, rome.pk]
    owner.patch(f"/api/projects/{project.pk}/prompts/{capital.pk}/", {"reference_answer": ""}, format="json")
    assert [_keys(t)[:2] for t in (paris, lyon)] == [(answers.UNCHECKABLE, 1)] * 2
    assert order() == [paris.pk, lyon.pk, rome.pk]
    # The messages count too: the demo task's checker takes over a prompt that is one of its problems.
    owner.patch(f"/api/projects/{project.pk}/prompts/{capital.pk}/",
                {"messages": [{"role": "user", "content": "Compute 1 + 1."}], "reference_answer": "2"},
                format="json")
    assert [_keys(t)[:2] for t in (paris, lyon)] == [(answers.WRONG, 0)] * 2


def test_writes_around_the_services_are_checked_by_the_queue(project, users, prompt, client_for):
    """A bulk INSERT, a direct UPDATE of the answer or the status, a full save() of a stale instance:
    the trigger keeps the rank consistent (or voids the verdict), and the queue checks what is void."""
    rows = Trace.objects.bulk_create([Trace(project=project, prompt=prompt, status=TraceStatus.FINISHED,
                                            final_answer=a) for a in ("45", "44", None)])
    assert [_keys(t) for t in rows] == [(None, None, None)] * 3  # nobody checked them yet
    supervisor = client_for("supervisor")
    url = QUEUE.format(project.pk)
    ids = [r["id"] for r in supervisor.get(url, {"order": "confident_wrong"}).json()["results"]]
    assert ids == [rows[1].pk, rows[2].pk, rows[0].pk]  # no answer at all is wrong too
    stale = Trace.objects.get(pk=rows[0].pk)
    Trace.objects.filter(pk=rows[0].pk).update(final_answer="46")
    assert _keys(rows[0]) == (None, None, None)
    ids = [r["id"] for r in supervisor.get(url, {"order": "confident_wrong"}).json()["results"]]
    assert ids == [rows[0].pk, rows[1].pk, rows[2].pk]  # three wrong ones now, none scored: by id
    assert _keys(rows[0])[:2] == (answers.WRONG, 0)
    stale.final_answer = "45"
    stale.save()  # a full save of the instance read before (answer_rank 2 in memory): checked again
    assert _keys(rows[0]) == (None, None, None)
    Trace.objects.filter(pk=rows[1].pk).update(status=TraceStatus.STOPPED)
    assert _keys(rows[1]) == (answers.WRONG, 1, None)  # not finished: the middle group, verdict kept
    assert [r["id"] for r in supervisor.get(url, {"order": "confident_wrong"}).json()["results"]] == [
        rows[2].pk, rows[1].pk, rows[0].pk]


def _mixed_queue(project, users, n: int = 90) -> None:
    rng = random.Random(12)
    owner = users["owner"]
    prompts = [make_prompt(project, actor=owner, text=f"Name the colour number {i}.", category="general",
                           reference=f"colour {i}") for i in range(4)]
    prompts.append(make_prompt(project, actor=owner, text="Write a haiku.", category="general", reference=""))
    traces = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        answer = rng.choice([f"colour {i % len(prompts)}", "grey", None])
        status = rng.choice([TraceStatus.FINISHED] * 4 + [TraceStatus.STOPPED, TraceStatus.FAILED])
        traces.append(make_trace(project, p, steps=["a", "b"], answer=answer, status=status))
    rows = []
    for trace in traces:
        for index in (-1, 0, 1):
            if rng.random() < 0.6:  # coarse values: many ties, broken by id
                rows.append(StepScore(trace=trace, step_index=index, scorer="prm:3", score=rng.randint(0, 4) / 4))
    StepScore.objects.bulk_create(rows)


def test_the_order_is_the_python_checks_over_every_trace(project, users):
    _mixed_queue(project, users)
    user = users["supervisor"]
    before = _order(project, user, before=True)  # answer_check of every finished trace, CASE over id lists
    after = _order(project, user)
    assert [i for i, _ in after] == [i for i, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before])
    groups = {rank for (rank,) in Trace.objects.filter(project=project).values_list("answer_rank")}
    wrong = Trace.objects.filter(project=project, answer_rank=0)
    assert groups == {0, 1, 2} and wrong.filter(wrong_confidence=None).exists() and wrong.exclude(
        wrong_confidence=None).exists()  # wrong ones with step scores and without


def test_a_cursor_walk_returns_every_trace_once_in_order_both_ways(project, users, client_for):
    _mixed_queue(project, users)
    expected = [i for i, _ in _order(project, users["supervisor"], before=True)]
    client = client_for("supervisor")
    url = QUEUE.format(project.pk)
    for limit in (1, 7):
        seen, pages = _walk(client, url, {"order": "confident_wrong"}, limit=limit)
        assert seen == expected
    # Backwards from the last page, by the previous links, to the first.
    back, response = [], client.get(pages[-1]["previous"])
    while True:
        body = response.json()
        back = [r["id"] for r in body["results"]] + back
        if not body["previous"]:
            break
        response = client.get(body["previous"])
    assert back + [r["id"] for r in pages[-1]["results"]] == expected


ANALYZE = ("ANALYZE annotator_trace, annotator_stepscore, annotator_tracereview, annotator_assignment, "
           "annotator_prompt, annotator_queueitem, annotator_membership")


def test_the_first_page_and_a_cursor_page_read_the_orders_index(project, users, other_project):
    """At a size where the planner has a choice (5,000 traces here, 5,000 in another project)."""
    prompt = make_prompt(project, actor=users["owner"], text="Name a colour.", category="general", reference="red")
    other = make_prompt(other_project, actor=users["outsider"], text="Name a colour.", category="general",
                        reference="red")
    with connection.cursor() as cur:
        for p in (project, other_project):
            cur.execute(
                """INSERT INTO annotator_trace (project_id, prompt_id, sampling_params, status, finish_reason,
                       final_answer, prompt_tokens, completion_tokens, version, error, mode, pause_reason,
                       review_count, verdict, disputed, created_at, updated_at)
                   SELECT %s, %s, '{}', CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'finished' END, 'stop',
                          CASE WHEN g %% 3 = 0 THEN 'blue' ELSE 'red' END, 1, 1, 1, '', 'live', '', 0, '', false,
                          now(), now()
                   FROM generate_series(1, 5000) g""", [p.pk, prompt.pk if p == project else other.pk])
        # Statistics of this test's tables, not of whatever earlier tests of the session left: with
        # stale ones the score trigger's UPDATE of 10,000 traces took ~20 s in the suite (0.9 s alone).
        cur.execute(ANALYZE)
        cur.execute("""INSERT INTO annotator_stepscore (trace_id, step_index, scorer, score, detail, created_at)
                       SELECT id, 0, 'prm:1', (id %% 100) / 100.0, '', now() FROM annotator_trace""", [])
    assert answers.verdicts_fill() == 10_000
    with connection.cursor() as cur:
        cur.execute(ANALYZE)
    qs = selectors.queue_list(project, users["supervisor"], order="confident_wrong")
    keys = ordering_keys(qs)
    rows = list(qs.values_list("triage_rank", "triage_score", "id"))
    wrong, right = rows[700], rows[4000]  # a cursor among the wrong ones (a score), one among the right (none)
    assert wrong[0] == 0 and wrong[1] is not None and right[0] == 2 and right[1] is None
    pages = [("first", qs[:51])]
    for cursor in (wrong, right):
        pages += [(f"{cursor} part {n}", qs.filter(part)[:51]) for n, part in enumerate(keyset_parts(keys, [*cursor]))]
    for name, page in pages:
        sql, params = page.query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
        if "trace_project_answer_rank" in plan and "Sort" not in plan:
            continue
        # A part that holds no row (rank 0, the wrong answers, with no score) may be planned any way:
        # PostgreSQL knows it is empty, and sorting nothing costs nothing. Any other part must be a
        # read of the order's index.
        assert not list(page), (name, plan)
