"""The answer check cached on the trace, for the queue's ``confident_wrong`` order.

``Trace.answer_verdict`` is ``heldout.answer_right`` of the trace's final answer against its
prompt (``WRONG``, ``UNCHECKABLE``: nothing to check it against, ``RIGHT``); NULL: not checked yet.
The check is Python (the demo task's checker, the reference rule check), so PostgreSQL cannot keep
the column itself. What it does keep (migration 0013, a row trigger on annotator_trace): a write
that changes a trace's answer (or prompt) sets its verdict back to NULL, and an edit of a prompt's
messages or reference does so for its traces; from the verdict and the status it derives
``answer_rank`` (0 wrong, 1 cannot be checked or not finished, 2 right; NULL: finished, not checked
yet) and ``wrong_confidence`` (the mean step score of the wrong ones), which the order's index
sorts by.

``verdicts_fill`` checks the NULL verdicts and writes them. It runs where a trace ends
(services/generation.py) and a prompt is edited (services/prompts.py), in the migration's backfill,
and in ``selectors.queue_list`` for whatever else left a finished trace unchecked (a raw INSERT, a
bulk import, a shell): normally nothing, one probe of a partial index.

SQL only, through a connection: the migration calls it too, so it does not depend on the models.
No import of selectors or services (both import this)."""

from __future__ import annotations

import json
from typing import Any

from django.db import connections, transaction

from trainer_worker.training.heldout import answer_right, user_text

WRONG, UNCHECKABLE, RIGHT = 0, 1, 2
BATCH = 2000


def verdict(text: str, answer: str | None, reference: str | None) -> int:
    """The cached form of ``heldout.answer_right(text, answer, reference)``."""
    right = answer_right(text, answer, reference)
    return UNCHECKABLE if right is None else (RIGHT if right else WRONG)


def verdicts_fill(
    *,
    project_id: int | None = None,
    prompt_id: int | None = None,
    trace_id: int | None = None,
    unranked: bool = False,
    batch: int | None = None,
    using: str = "default",
) -> int:
    """Check and store the answers of the traces with no verdict (those of ``project_id``,
    ``prompt_id`` (give its project too: the (project, prompt, id) index serves it) or ``trace_id``;
    every trace when none is given); the number written. ``unranked``: only the finished ones (what
    the queue's order needs; the partial index (project, id) WHERE answer_rank IS NULL serves it).

    In batches of ``batch`` (default ``BATCH``) traces by id, each its own transaction (the
    migration's backfill of a million traces holds no long transaction and no table in memory). Locks
    in the order a prompt edit takes them (the prompt, then its traces): the batch's prompts FOR
    SHARE (an edit of one waits until the verdicts checked against it are written; its trigger then
    voids them), then the traces FOR UPDATE in id order, as the scores' trigger (migration 0010)
    locks them; their answers are read again under the lock. A concurrent fill waits, then finds
    them checked.

    Only ``unranked`` asks PostgreSQL for the NULLs (the partial index's own predicate); otherwise
    the batch is a range of ids and the NULLs are picked here. The planner's estimate of
    ``answer_verdict IS NULL`` comes from the last ANALYZE (next to none, normally), and a burst
    of unchecked rows after it (a bulk INSERT) planned on that estimate reads the whole table per
    batch: 30 s for a batch of 2,000 at 100k traces (bench/lists.py)."""
    batch = batch or BATCH
    where, params = [], []
    if unranked:
        where.append("t.answer_rank IS NULL")  # NULL only while finished and unchecked
    for column, value in (("project_id", project_id), ("prompt_id", prompt_id), ("id", trace_id)):
        if value is not None:
            where.append(f"t.{column} = %s")
            params.append(value)
    select = (f"SELECT t.id, t.prompt_id, t.answer_verdict FROM annotator_trace t "  # noqa: S608 - fixed columns
              f"WHERE {' AND '.join([*where, 't.id > %s'])} ORDER BY t.id LIMIT %s")
    written, last = 0, 0
    while True:
        with transaction.atomic(using=using), connections[using].cursor() as cur:
            cur.execute(select, [*params, last, batch])
            rows = cur.fetchall()
            todo = [(pk, prompt) for pk, prompt, verdict_now in rows if verdict_now is None]
            if todo:
                cur.execute("SELECT id, messages, reference_answer FROM annotator_prompt WHERE id = ANY(%s) "
                            "ORDER BY id FOR SHARE", [sorted({prompt for _, prompt in todo})])
                prompts = {pk: (user_text(_json(m)), reference) for pk, m, reference in cur.fetchall()}
                cur.execute("SELECT id, prompt_id, final_answer, answer_verdict FROM annotator_trace "
                            "WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [[pk for pk, _ in todo]])
                checked: dict[tuple[int, str | None], int] = {}  # each distinct (prompt, answer) once
                ids, verdicts = [], []
                for pk, prompt, answer, verdict_now in cur.fetchall():
                    if verdict_now is not None or prompt not in prompts:  # checked meanwhile; moved
                        continue
                    key = (prompt, answer)
                    if key not in checked:
                        text, reference = prompts[prompt]
                        checked[key] = verdict(text, answer, reference)
                    ids.append(pk)
                    verdicts.append(checked[key])
                # ``id = ANY``: a range of the primary key whatever the planner thinks of the join.
                cur.execute("UPDATE annotator_trace t SET answer_verdict = v.verdict "
                            "FROM unnest(%s::bigint[], %s::smallint[]) AS v(id, verdict) "
                            "WHERE t.id = v.id AND t.id = ANY(%s)", [ids, verdicts, ids])
                written += cur.rowcount
        if len(rows) < batch:
            return written
        last = rows[-1][0]


def _json(value: Any) -> Any:
    # Django's psycopg 3 connections hand jsonb over as text (its JSONField decodes it); others decoded.
    return json.loads(value) if isinstance(value, str) else value
