"""Errors that services and the permission gate raise. The REST layer maps them to HTTP statuses
(annotator/api/errors.py); the websocket consumer maps them to error events with the same codes."""

from __future__ import annotations

from typing import Any


class StudioError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "detail": self.message}
        if self.details is not None:
            body["errors"] = self.details
        return body


class InvalidInput(StudioError):
    status = 400
    code = "invalid"


class NotFound(StudioError):
    status = 404
    code = "not_found"


class Forbidden(StudioError):
    status = 403
    code = "forbidden"


class Conflict(StudioError):
    status = 409
    code = "conflict"
