"""Pagination.

``StudioPagination``: limit/offset with bounds, for the small lists (projects, runs, snapshots…): a
huge ``limit`` is capped, a huge ``offset`` is refused (PostgreSQL's OFFSET is a bigint, and Python
would pass any integer on to it).

``KeysetPagination``: for the lists that grow without bound (traces, the review queue, prompts,
corrections, the audit log). A page is asked for by an opaque ``cursor`` (the sort key of the row
it follows: ``WHERE (key, id) > (last key, last id) … LIMIT n``), so page 20,000 costs what page 1
costs, and rows inserted or deleted between two fetches never make a row appear twice or be
skipped (an OFFSET shifts under inserts). Ties in the sort keys are broken by ``id``, the last key
of every keyset ordering. ``offset`` still works for old clients (bounded as above), and every
answer's ``next`` / ``previous`` links carry cursors.

Counts: an exact ``COUNT(*)`` of a million rows takes hundreds of milliseconds, on every page. So
the count is exact up to ``COUNT_CAP`` (PostgreSQL counts at most ``COUNT_CAP + 1`` rows of the
page's query, which costs at most that many rows); above it the answer gives PostgreSQL's planner
estimate of the query's rows (``EXPLAIN``, from ``pg_class.reltuples`` and the column statistics,
never below ``COUNT_CAP + 1``) with ``count_exact: false``. Clients show "about N" then. The
capped count gets at most ``COUNT_BUDGET_MS`` of PostgreSQL's time (a rare filter can make even
10,001 matches a long read); past it, the answer is the planner's estimate, not exact.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy
from rest_framework.pagination import BasePagination, LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from annotator.counting import COUNT_BUDGET_MS, COUNT_CAP, fast_count, planner_estimate
from annotator.errors import InvalidInput

__all__ = ["COUNT_BUDGET_MS", "COUNT_CAP", "KeysetPagination", "StudioPagination", "fast_count", "planner_estimate"]

MAX_LIMIT = 500
MAX_OFFSET = 10**9
DEFAULT_LIMIT = 50
MAX_CURSOR_CHARS = 512
_INT64 = 2**63


class StudioPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request) -> int:
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise InvalidInput(f"offset must be at most {MAX_OFFSET}.")
        return offset


# --- keyset ---------------------------------------------------------------------------------------


# Annotations that equal the row's id, read from another table's index in the same order: the queue's
# "mine" pages order by their queue items' trace ids (a range of the person's items, whatever
# PostgreSQL estimates for a range of the trace table's ids). Never NULL; a valid last key.
ID_KEYS = ("id", "queue_trace")


@dataclass(frozen=True)
class Key:
    """One sort key: a field or annotation of the row, its direction, where its NULLs sort."""

    name: str
    descending: bool
    nulls_last: bool

    def reversed(self) -> Key:
        return Key(self.name, not self.descending, not self.nulls_last)

    def order(self) -> OrderBy:
        nulls = {"nulls_last": True} if self.nulls_last else {"nulls_first": True}
        return F(self.name).desc(**nulls) if self.descending else F(self.name).asc(**nulls)

    def strictly_after(self, value: Any) -> Q | None:
        """Rows whose key sorts after ``value`` in this direction (None: no row can)."""
        if value is None:
            return None if self.nulls_last else Q(**{f"{self.name}__isnull": False})
        after = Q(**{f"{self.name}__{'lt' if self.descending else 'gt'}": value})
        if self.nulls_last and self.name not in ID_KEYS:
            after |= Q(**{f"{self.name}__isnull": True})
        return after

    def equal(self, value: Any) -> Q:
        return Q(**{f"{self.name}__isnull": True}) if value is None else Q(**{self.name: value})


def ordering_keys(qs: QuerySet) -> list[Key]:
    """The keys of ``qs``'s ORDER BY. PostgreSQL's default puts NULLs last ascending, first descending."""
    keys = []
    for item in qs.query.order_by:
        if isinstance(item, str):
            descending = item.startswith("-")
            name = item.lstrip("-")
            keys.append(Key("id" if name == "pk" else name, descending, not descending))
        elif isinstance(item, OrderBy) and isinstance(item.expression, F):
            nulls_last = bool(item.nulls_last) if (item.nulls_last or item.nulls_first) else not item.descending
            keys.append(Key(item.expression.name, item.descending, nulls_last))
        else:
            raise TypeError(f"keyset pagination cannot page by {item!r}")
    if not keys or keys[-1].name not in ID_KEYS:
        raise TypeError("keyset pagination needs an ordering whose last key is id")
    return keys


def keyset_after(keys: list[Key], values: list[Any]) -> Q:
    """The rows after ``values`` in the order of ``keys``: (k1 > v1) or (k1 = v1 and k2 > v2) or …"""
    result: Q | None = None
    equal = Q()
    for key, value in zip(keys, values, strict=True):
        after = key.strictly_after(value)
        if after is not None:
            term = equal & after
            result = term if result is None else result | term
        equal &= key.equal(value)
    return result if result is not None else Q(pk__in=[])


def keyset_parts(keys: list[Key], values: list[Any]) -> list[Q]:
    """``keyset_after`` as parts to read one after another, each in the order's sense after the one
    before, for an ordering (key, id) on a nullable key (the queue's triage orders), or (key1, key2,
    …, id) (``confident_wrong``: rank, score, id).

    One OR of "key beyond v, or key = v and id after, or key null" cannot be read as a range of the
    (…, key, id) index: PostgreSQL reads the index from its start and filters, so a deep page costs
    its depth. Split, each part is a range: the non-null rows from v on (``key >= v``, filtering out
    only the rows that tie v at or before the cursor's id), then, where NULLs sort last, the NULL
    rows (``key IS NULL``, by id). With more keys, the first one equal to the cursor's and the
    parts of the others, then the rows beyond the cursor's first key (and its NULLs where they
    sort last)."""
    if len(keys) > 2 and keys[0].name != "id" and keys[-1].name == "id":
        head, value = keys[0], values[0]
        tied = [head.equal(value) & part for part in keyset_parts(keys[1:], values[1:])]
        if value is None:
            return tied if head.nulls_last else [*tied, Q(**{f"{head.name}__isnull": False})]
        beyond = Q(**{f"{head.name}__{'lt' if head.descending else 'gt'}": value})
        return [*tied, beyond, Q(**{f"{head.name}__isnull": True})] if head.nulls_last else [*tied, beyond]
    if len(keys) != 2 or keys[0].name == "id" or keys[1].name != "id":
        return [keyset_after(keys, values)]
    key, last = keys
    value, pk = values
    beyond_pk = last.strictly_after(pk)
    nulls = Q(**{f"{key.name}__isnull": True})
    if value is None:
        tail = nulls & beyond_pk
        return [tail] if key.nulls_last else [tail, Q(**{f"{key.name}__isnull": False})]
    op = "lt" if key.descending else "gt"
    from_value = Q(**{f"{key.name}__{op}e": value}) & (Q(**{f"{key.name}__{op}": value}) | beyond_pk)
    return [from_value, nulls] if key.nulls_last else [from_value]


def _signature(keys: list[Key]) -> str:
    return ",".join(("-" if k.descending else "") + k.name + ("" if k.nulls_last else "^") for k in keys)


def encode_cursor(keys: list[Key], values: list[Any], *, backwards: bool) -> str:
    body = {"o": _signature(keys), "k": values}
    if backwards:
        body["d"] = "p"
    raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_cursor(why: str) -> InvalidInput:
    return InvalidInput(f"Bad cursor ({why}). Use a next/previous link as given, or start again without cursor.",
                        code="bad_cursor")


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def decode_cursor(raw: str, keys: list[Key]) -> tuple[list[Any], bool]:
    """(the key values, backwards) of a cursor; InvalidInput (400 ``bad_cursor``) for anything else."""
    if len(raw) > MAX_CURSOR_CHARS:
        raise _bad_cursor(f"longer than {MAX_CURSOR_CHARS} characters")
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad_cursor("not a cursor this server wrote") from None
    if not isinstance(body, dict) or set(body) - {"o", "k", "d"} or not isinstance(body.get("k"), list):
        raise _bad_cursor("not a cursor this server wrote")
    if body.get("o") != _signature(keys):
        raise _bad_cursor("it belongs to another ordering of this list")
    if body.get("d", "n") not in ("n", "p"):
        raise _bad_cursor("unknown direction")
    values = body["k"]
    if len(values) != len(keys):
        raise _bad_cursor("wrong number of keys")
    for key, value in zip(keys, values, strict=True):
        if key.name == "id":
            ok = type(value) is int and -_INT64 <= value < _INT64
        elif value is None or type(value) is int:
            ok = value is None or -_INT64 <= value < _INT64
        else:
            ok = type(value) is float and math.isfinite(value)
        if not ok:
            raise _bad_cursor(f"bad value for {key.name}")
    return values, body.get("d") == "p"


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int | float):
        return value
    raise TypeError(f"keyset pagination cannot put {type(value).__name__} in a cursor")


def _from_the_projects_edge(qs: QuerySet, key: Key, view) -> QuerySet:
    """A first page in id order, bounded by the project's first (or, newest first, last) id.

    Without the bound, PostgreSQL may read a large project's first page from the primary key and
    filter out every row of the other projects that comes before it (it assumes the project's rows
    are spread evenly): 100,000 rows of another project cost 30-80 ms (bench/lists.py). The bound
    comes from the (project, id) index: asked as a row comparison, since for ``WHERE project = p
    ORDER BY id LIMIT 1`` (or ``min(id)``) the planner makes the same choice of the primary key."""
    project = getattr(view, "project", None)
    if key.name != "id" or project is None or not any(f.name == "project" for f in qs.model._meta.fields):
        return qs
    table = connection.ops.quote_name(qs.model._meta.db_table)
    column = connection.ops.quote_name(qs.model._meta.get_field("project").column)
    op, order, bound = ("<=", "DESC", _INT64 - 1) if key.descending else (">=", "ASC", 0)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column}, id FROM {table} WHERE ({column}, id) {op} (%s, %s) "  # noqa: S608
                       f"ORDER BY {column} {order}, id {order} LIMIT 1", [project.pk, bound])
        row = cursor.fetchone()
    edge = row[1] if row and row[0] == project.pk else None
    if edge is None:
        return qs
    return qs.filter(id__lte=edge) if key.descending else qs.filter(id__gte=edge)


class KeysetPagination(BasePagination):
    """Cursor pages (see the module docstring). Query: ``limit`` (default 50, at most 500), ``cursor``
    (from a ``next``/``previous`` link) or, for old clients, ``offset``. The answer: ``count`` (exact
    when ``count_exact``, else PostgreSQL's estimate), ``next``, ``previous``, ``results``."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request) -> int:
        raw = request.query_params.get("limit")
        try:
            limit = int(raw) if raw not in (None, "") else self.default_limit
        except ValueError:
            raise InvalidInput("limit takes a whole number.") from None
        if limit < 1:
            raise InvalidInput("limit must be at least 1.")
        return min(limit, self.max_limit)

    def get_offset(self, request) -> int | None:
        raw = request.query_params.get("offset")
        if raw in (None, ""):
            return None
        try:
            offset = int(raw)
        except ValueError:
            raise InvalidInput("offset takes a whole number.") from None
        if offset < 0 or offset > MAX_OFFSET:
            raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}.")
        return offset

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        keys = ordering_keys(queryset)
        limit = self.get_limit(request)
        offset = self.get_offset(request)
        raw = request.query_params.get("cursor")
        if raw and offset is not None:
            raise InvalidInput("Give cursor or offset, not both.")
        backwards = False
        page_qs = queryset
        if raw:
            values, backwards = decode_cursor(raw, keys)
            if backwards:
                reverse = [k.reversed() for k in keys]
                page_qs, parts = queryset.order_by(*[k.order() for k in reverse]), keyset_parts(reverse, values)
            else:
                parts = keyset_parts(keys, values)
            rows = []
            for part in parts:  # the next part only when this one ran out
                rows += list(page_qs.filter(part)[: limit + 1 - len(rows)])
                if len(rows) > limit:
                    break
        else:
            start = offset or 0
            rows = list(_from_the_projects_edge(queryset, keys[0], view)[start : start + limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
        # A view may count exactly only up to a smaller cap (the queue's "mine": two lookups a row).
        known = getattr(view, "known_count", None)
        if known is not None:  # e.g. the queue's "mine" pages: the person's queue counter
            self.count, self.count_exact = known, True
        else:
            self.count, self.count_exact = fast_count(queryset, cap=getattr(view, "count_cap", None))
        self.next_link = self.previous_link = None
        url = request.build_absolute_uri()
        url = remove_query_param(url, "offset")
        if rows:
            first = [_json_value(getattr(rows[0], k.name)) for k in keys]
            last = [_json_value(getattr(rows[-1], k.name)) for k in keys]
            # Forwards: a next page when more rows were read; backwards, the page we came from.
            if (more and not backwards) or backwards:
                self.next_link = replace_query_param(url, "cursor", encode_cursor(keys, last, backwards=False))
            if (raw and not backwards) or (offset or 0) > 0 or (backwards and more):
                self.previous_link = replace_query_param(url, "cursor", encode_cursor(keys, first, backwards=True))
        return rows

    def get_paginated_response(self, data):
        return Response(OrderedDict([
            ("count", self.count),
            ("count_exact", self.count_exact),
            ("next", self.next_link),
            ("previous", self.previous_link),
            ("results", data),
        ]))

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["count", "count_exact", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "description": f"Exact up to {COUNT_CAP}; above it, PostgreSQL's "
                          "estimate (count_exact false)."},
                "count_exact": {"type": "boolean", "description": "Whether count is exact."},
                "next": {"type": "string", "nullable": True, "format": "uri",
                         "description": "The following page (a cursor link); null on the last page."},
                "previous": {"type": "string", "nullable": True, "format": "uri",
                             "description": "The page before (a cursor link); null on the first page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": "limit", "required": False, "in": "query",
             "description": f"Rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).",
             "schema": {"type": "integer"}},
            {"name": "cursor", "required": False, "in": "query",
             "description": "The page after (or before) a row, from a next/previous link.",
             "schema": {"type": "string"}},
            {"name": "offset", "required": False, "in": "query",
             "description": "Rows to skip (for old clients; pages deep into a large list are slow).",
             "schema": {"type": "integer"}},
        ]
