"""One error shape for the whole API: {"code": ..., "detail": ..., "errors"?: ...}."""

from __future__ import annotations

import logging

from django.db import DataError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotator.errors import StudioError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def exception_handler(exc, context):
    if isinstance(exc, StudioError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database cannot be reached (down, restarting, a connection lost): nothing was done, and
        # the same request will work once it is back. A 503 says "try again", a 500 "a bug".
        # tests/webapp/test_fault_postgres_down.py
        log.error("database unavailable: %s", exc)
        return Response(
            {"code": "unavailable", "detail": "The database is unavailable; nothing was changed. Try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(exc, DataError):
        # A value PostgreSQL cannot take (out of range, too long) that the input checks missed: the
        # client's input, so a 400, but logged, because a check should have caught it first.
        log.warning("DataError reached the API: %s", exc)
        return Response(
            {"code": "invalid", "detail": "A value in the request is out of range for its field."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(data, dict) and set(data) == {"detail"}:
        response.data = {"code": getattr(data["detail"], "code", code), "detail": str(data["detail"])}
    else:
        if response.status_code == status.HTTP_400_BAD_REQUEST:
            code = "invalid"
        response.data = {"code": code, "detail": summary(data), "errors": data}
    return response


def summary(errors) -> str:
    """The first field error in words ("guidelines: Ensure this field has no more than ..."), so the
    detail says what is wrong without reading `errors`."""
    if isinstance(errors, dict):
        for field, problems in errors.items():
            first = problems[0] if isinstance(problems, list) and problems else problems
            if isinstance(first, dict):
                return f"{field}: {summary(first)}"
            return f"{field}: {first}"
    if isinstance(errors, list) and errors:
        return str(errors[0])
    return "The request is not valid; see errors."
