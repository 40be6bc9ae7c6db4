"""OpenAPI post-processing: every operation documents the error answers it can give, in the one error
shape (`Error`): 400 for input, 401 anonymous, 403 role too low, 404 not found or not a member, 409
state conflicts where an operation has them, 413 oversize bodies, 429 throttled logins."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import is_serializer

_DESCRIPTIONS = {
    "400": "Invalid input (code names the problem; errors lists fields or lines)",
    "401": "Not authenticated",
    "403": "Authenticated, but the project role is too low",
    "404": "Not found, or not a member of the project",
    "413": "The request body is over the size limit",
    "429": "Too many failed logins from this address for this account (see Retry-After)",
}
_WRITES = {"post", "put", "patch"}


class StudioAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus: a response given as a serializer with ``allow_null=True``
    (``responses={200: S(allow_null=True)}``) may be JSON null, and the schema says so. drf-spectacular
    honours ``allow_null`` on fields only; on a whole response it was dropped, and the schema promised
    an object where the view answers null (e.g. nobody controls a trace)."""

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        if is_serializer(serializer) and getattr(serializer, "allow_null", False):
            for media in response.get("content", {}).values():
                media["schema"] = {"allOf": [media["schema"]], "nullable": True}
        return response


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            takes_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
            codes = ["400"] if method in _WRITES or takes_query else []
            if path.endswith("/auth/token/"):
                codes += ["413", "429"]
            else:
                codes += ["401", "403"]
                if "{" in path:
                    codes.append("404")
                if method in _WRITES:
                    codes.append("413")
            for code in codes:
                responses.setdefault(code, {"content": error, "description": _DESCRIPTIONS[code]})
    return result
