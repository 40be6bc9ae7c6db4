"""Where the studio may reach on a user's behalf: backend URLs and model paths.

A model version names a vLLM server (`backend_options.base_url`) and checkpoint folders (`path`,
`base_model` for the local backend, `adapter_path`). Owners of any project set these, and any
logged-in user can create a project, so without a check they could make the generate worker POST to
any address it can reach and read any folder on its disk. Both are refused unless they match the
settings: `settings.BACKEND_URL_ALLOWLIST` (`SAFELADDER_BACKEND_URLS`, default: VLLM_BASE_URL) and
`settings.MODEL_ROOTS` (the model store plus `SAFELADDER_MODEL_ROOTS`).

They are checked when a model version is created or updated (a clear 400), and again right before
use (generation, adapter loading), because the settings can change and rows can come from elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from annotator.errors import InvalidInput

_DEFAULT_PORTS = {"http": 80, "https": 443}


class NotAllowed(InvalidInput):
    code = "not_allowed"


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int | None  # None: any port (an entry written `host:*`)
    path: str


def _parse(url: str, *, entry: bool = False) -> _Origin:
    wildcard = False
    if entry and ":*" in url:
        url, wildcard = url.replace(":*", "", 1), True
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user name or password in the URL")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment")
    port = None if wildcard else (parts.port or _DEFAULT_PORTS[parts.scheme])
    path = "/" + parts.path.strip("/")
    return _Origin(parts.scheme, parts.hostname.lower(), port, path)


def _allowed(url: str, entries: list[str]) -> bool:
    given = _parse(url)
    for allowed in (_parse(entry, entry=True) for entry in entries):
        if (given.scheme, given.host) != (allowed.scheme, allowed.host):
            continue
        if allowed.port is not None and given.port != allowed.port:
            continue
        if allowed.path == "/" or given.path == allowed.path or given.path.startswith(allowed.path + "/"):
            return True
    return False


def _url_check(url: object, entries: list[str], *, field: str, setting: str) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{field} must be a URL string.")
    try:
        allowed = _allowed(url, entries)
    except ValueError as exc:
        raise NotAllowed(f"{field} must be {exc}.") from None
    if allowed:
        return url
    raise NotAllowed(f"This URL is not on the server's allow-list ({setting}); ask an administrator to add it.")


def backend_url_check(url: object) -> str:
    """The URL, if it is on the allow-list (same scheme, host and port, under the entry's path)."""
    return _url_check(url, settings.BACKEND_URL_ALLOWLIST, field="backend_options.base_url",
                      setting="SAFELADDER_BACKEND_URLS")


def webhook_url_check(url: object) -> str:
    """A webhook target, under the same policy as backends, with its own list
    (``SAFELADDER_WEBHOOK_URLS``; empty by default, so no webhook reaches anywhere until an
    administrator names where). Checked on create and update, and again before every delivery."""
    return _url_check(url, settings.WEBHOOK_URL_ALLOWLIST, field="url", setting="SAFELADDER_WEBHOOK_URLS")


def model_roots() -> list[Path]:
    return [Path(os.path.realpath(root)) for root in [settings.MODEL_STORE, *settings.MODEL_ROOTS]]


def model_path_check(path: object, *, field: str = "path") -> str:
    """The path, if it is absolute and lies (symbolic links resolved) under the model store or a
    configured model root. It need not exist yet: a run's output folder is registered before use."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"{field} must be a folder path.")
    if not os.path.isabs(path):
        raise NotAllowed(f"{field} must be an absolute path under the model store or a model root.")
    real = Path(os.path.realpath(path))
    if any(real == root or root in real.parents for root in model_roots()):
        return path
    raise NotAllowed(
        f"{field} is outside the model store and the configured model roots (SAFELADDER_MODEL_ROOTS)."
    )


def model_version_check(version: Any) -> None:
    """Refuse a model version whose checkpoint folders or backend URL the server may not use. Called
    on create and update (annotator/services/model_versions.py), and again before each use."""
    from annotator.models import Backend

    if version.backend == Backend.LOCAL:
        model_path_check(version.path or version.base_model, field="path" if version.path else "base_model")
    for field in ("path", "adapter_path"):
        if getattr(version, field):
            model_path_check(getattr(version, field), field=field)
    if version.backend == Backend.VLLM and "base_url" in (version.backend_options or {}):
        backend_url_check(version.backend_options["base_url"])
