"""OpenAPI post-processing: every operation documents the error answers it can give, in the one error
shape (`Error`): 400 for input, 401 anonymous, 403 role too low, 404 not found or not a member, 409
state conflicts where an operation has them, 413 oversize bodies, 429 throttled logins."""

from __future__ import annotations

from typing import Any

_DESCRIPTIONS = {
    "400": "Invalid input (code names the problem; errors lists fields or lines)",
    "401": "Not authenticated",
    "403": "Authenticated, but the project role is too low",
    "404": "Not found, or not a member of the project",
    "413": "The request body is over the size limit",
    "429": "Too many failed logins from this address for this account (see Retry-After)",
}
_WRITES = {"post", "put", "patch"}


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
