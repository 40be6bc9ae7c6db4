"""One error shape for the whole API: {"code": ..., "detail": ..., "errors"?: ...}."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotator.errors import StudioError


def exception_handler(exc, context):
    if isinstance(exc, StudioError):
        return Response(exc.as_dict(), status=exc.status)
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
        response.data = {"code": code, "detail": "The request is not valid; see errors.", "errors": data}
    return response
