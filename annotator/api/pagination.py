"""Limit/offset pagination with bounds: a huge `limit` is capped, a huge `offset` is refused (PostgreSQL's
OFFSET is a bigint, and Python would pass any integer on to it)."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination

from annotator.errors import InvalidInput

MAX_LIMIT = 500
MAX_OFFSET = 10**9


class StudioPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request) -> int:
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise InvalidInput(f"offset must be at most {MAX_OFFSET}.")
        return offset
