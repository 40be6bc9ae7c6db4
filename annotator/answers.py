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

    In batches of ``batch`` (default ``BATCH``) traces by id, each its own transaction (the migration's backfill of a
    million traces holds no long transaction and no table in memory). The batch's prompts are read
    FOR SHARE, so an edit of one waits until the verdicts checked against it are written (then its
    trigger clears them again). A verdict is written only where it is still NULL and the answer is
    the one checked: a trace whose answer changed meanwhile keeps NULL for the next fill."""
    batch = batch or BATCH
    where, params = ["t.answer_verdict IS NULL"], []
    if unranked:
        where = ["t.answer_rank IS NULL"]  # NULL only while finished and unchecked
    for column, value in (("project_id", project_id), ("prompt_id", prompt_id), ("id", trace_id)):
        if value is not None:
            where.append(f"t.{column} = %s")
            params.append(value)
    select = (f"SELECT t.id, t.prompt_id, t.final_answer FROM annotator_trace t "  # noqa: S608 - fixed columns
              f"WHERE {' AND '.join(where)} AND t.id > %s ORDER BY t.id LIMIT %s")
    written, last = 0, 0
    while True:
        with transaction.atomic(using=using), connections[using].cursor() as cur:
            cur.execute(select, [*params, last, batch])
            rows = cur.fetchall()
            if not rows:
                return written
            cur.execute("SELECT id, messages, reference_answer FROM annotator_prompt WHERE id = ANY(%s) "
                        "ORDER BY id FOR SHARE", [sorted({r[1] for r in rows})])
            prompts = {pk: (user_text(_json(messages)), reference) for pk, messages, reference in cur.fetchall()}
            checked: dict[tuple[int, str | None], int] = {}  # each distinct (prompt, answer) once
            ids, verdicts, answers = [], [], []
            for pk, prompt, answer in rows:
                key = (prompt, answer)
                if key not in checked:
                    text, reference = prompts[prompt]
                    checked[key] = verdict(text, answer, reference)
                ids.append(pk)
                verdicts.append(checked[key])
                answers.append(answer)
            cur.execute(
                """UPDATE annotator_trace t SET answer_verdict = v.verdict
                   FROM unnest(%s::bigint[], %s::smallint[], %s::text[]) AS v(id, verdict, answer)
                   WHERE t.id = v.id AND t.answer_verdict IS NULL AND t.final_answer IS NOT DISTINCT FROM v.answer""",
                [ids, verdicts, answers],
            )
            written += cur.rowcount
        last = rows[-1][0]
        if len(rows) < batch:
            return written


def _json(value: Any) -> Any:
    # Django's psycopg 3 connections hand jsonb over as text (its JSONField decodes it); others decoded.
    return json.loads(value) if isinstance(value, str) else value
