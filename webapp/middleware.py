"""Middleware of the whole site: the API's guard (size, query strings, one error shape) and the security
headers (Content-Security-Policy).

The guard is the outermost middleware, so every answer under /api/ passes through it last: whatever
an inner layer produced for an error (Django's HTML 404, the 400 page of RequestDataTooBig, the
technical 500 page of DEBUG) leaves as the API's JSON error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from annotator.errors import InvalidInput
from annotator.input import check_text

API_PREFIX = "/api/"
_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "throttled",
    500: "server_error",
    503: "unavailable",
}


def error_response(status: int, detail: str, code: str | None = None, **headers: str) -> JsonResponse:
    response = JsonResponse({"code": code or _CODES.get(status, "error"), "detail": detail}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def body_limit(request: HttpRequest) -> int:
    """The most a request body may hold: uploads (multipart) get the upload limit, anything else the
    form/JSON limit. Both are refused by Content-Length, before a byte of the body is read."""
    if request.META.get("CONTENT_TYPE", "").startswith("multipart/"):
        return settings.MAX_REQUEST_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class ApiGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        refused = self._refuse_early(request)
        if refused is not None:
            return refused
        return self._json_shape(request, self.get_response(request))

    def _refuse_early(self, request: HttpRequest) -> HttpResponse | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(400, "Content-Length is not a number.")
        limit = body_limit(request)
        if length > limit:
            return error_response(413, f"The body is {length} bytes; the limit here is {limit} bytes.")
        try:
            for key, values in request.GET.lists():
                check_text(key, where="A query parameter name")
                for value in values:
                    check_text(value, where=f"The query parameter {key!r}")
        except InvalidInput as exc:
            return error_response(400, exc.message, exc.code)
        return None

    def _json_shape(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        if status == 400 and b"RequestDataTooBig" in getattr(response, "content", b"")[:4000]:
            status, phrase = 413, f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        detail = {404: f"No API endpoint at {request.path}.", 500: "Internal server error."}.get(status, phrase)
        shaped = error_response(status, detail)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                shaped[header] = response[header]
        return shaped


class SecurityHeadersMiddleware:
    """Content-Security-Policy on every HTML page (settings.CONTENT_SECURITY_POLICY): scripts, styles,
    images and connections from this origin only; the UI, the admin and the API docs need nothing more
    (tests/e2e/test_csp.py loads each in Chromium and fails on any violation). Set on every response
    (a JSON body opened in a browser is a document too); a view may set its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = "; ".join(f"{k} {v}" for k, v in settings.CONTENT_SECURITY_POLICY.items())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", self.policy)
        return response

