"""Counts that stay fast on large tables (issue 14): exact up to COUNT_CAP rows, PostgreSQL's
planner estimate above it, and never more than COUNT_BUDGET_MS of the database's time. Used by the
list pagination (annotator/api/pagination.py) and the queue's counters."""

from __future__ import annotations

import json

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet
from psycopg.errors import QueryCanceled

COUNT_CAP = 10_000
COUNT_BUDGET_MS = 30


def planner_estimate(qs: QuerySet) -> int:
    """PostgreSQL's estimate of the rows ``qs`` returns (EXPLAIN; nothing is read)."""
    sql, params = qs.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def fast_count(qs: QuerySet, *, cap: int | None = None, budget_ms: int | None = None) -> tuple[int, bool]:
    """(count, exact): exact up to ``cap`` rows (COUNT_CAP), else the planner's estimate (at least
    cap + 1). A filter that few rows match can make even the capped count read most of the table
    (10,000 matches among a million rows); so the count gets ``budget_ms`` (COUNT_BUDGET_MS) of
    PostgreSQL's time, and past that the answer is the planner's estimate, not exact."""
    cap = COUNT_CAP if cap is None else cap
    budget_ms = COUNT_BUDGET_MS if budget_ms is None else budget_ms
    capped = qs.order_by().values("pk")[: cap + 1]
    try:
        # A savepoint (or a transaction): a cancelled count leaves the request's own transaction usable,
        # and SET LOCAL ends with it (set back to the default when the count finishes inside an outer one).
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(budget_ms))}")  # 0 would mean none
            counted = capped.count()
            cursor.execute("SET LOCAL statement_timeout TO DEFAULT")
    except OperationalError as exc:
        if not isinstance(exc.__cause__, QueryCanceled):
            raise
        return planner_estimate(qs), False
    if counted <= cap:
        return counted, True
    return max(cap + 1, planner_estimate(qs)), False
