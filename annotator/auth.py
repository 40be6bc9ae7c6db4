"""Authentication: the client's real address, login throttling, and API tokens.

**Client address.** `X-Forwarded-For` is believed only when the connection comes from a configured
proxy (settings.TRUSTED_PROXIES, `SAFELADDER_TRUSTED_PROXIES`: addresses or networks); the client is then
the right-most forwarded address that is not itself a trusted proxy. Anyone else's header is ignored.

**Login throttling** (the token endpoint, `/accounts/login/` and `/admin/login/` alike). Failed attempts
are counted in Redis for a window of LOGIN_WINDOW_S, per (account, address) and per address. Past
LOGIN_FAILURES_PER_ACCOUNT for one account from one address, that address may not try that account
again until the window ends; past LOGIN_FAILURES_PER_ADDRESS failures across accounts, that address
may not try any. The same account from any other address is unaffected, so an attacker cannot lock
a user out, and a success clears that (account, address) count. Successes are never counted.

**API tokens.** A token is 40 random URL-safe characters, shown once; only its SHA-256 is stored. It
expires after settings.API_TOKEN_TTL_S, is revoked by `POST /api/auth/logout/`, and stops working
when the user's password changes (each token keeps an HMAC of the password hash it was issued under,
as Django's sessions do).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import authentication, exceptions

LOGIN_WINDOW_S = 15 * 60
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_ADDRESS = 20


# --- the client's address -------------------------------------------------------------------------


def _networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES]


def _is_proxy(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Any) -> str:
    meta = request.META
    remote = meta.get("REMOTE_ADDR", "") or "unknown"
    networks = _networks()
    if not _is_proxy(remote, networks):
        return remote
    forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    for address in reversed(forwarded):
        if not _is_proxy(address, networks):
            return address
    return forwarded[0] if forwarded else remote


# --- login throttling -----------------------------------------------------------------------------


def _redis():
    from annotator.flags import redis_client

    return redis_client()


def _keys(request: Any, username: str) -> tuple[str, str]:
    from annotator.flags import key_prefix

    address = client_address(request)
    account = hashlib.sha256(username.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]
    return f"{key_prefix()}login:{account}:{address}", f"{key_prefix()}login:addr:{address}"


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; try again in {max(1, retry_after // 60)} minute(s).")
        self.retry_after = retry_after


def login_check(request: Any, username: str) -> None:
    """Raise LoginThrottled when this address may not try this account now (before the password is checked)."""
    pair, address = _keys(request, username)
    client = _redis()
    counts = client.mget(pair, address)
    for key, count, limit in ((pair, counts[0], LOGIN_FAILURES_PER_ACCOUNT),
                              (address, counts[1], LOGIN_FAILURES_PER_ADDRESS)):
        if count is not None and int(count) >= limit:
            raise LoginThrottled(max(1, client.ttl(key)))


def login_failed(request: Any, username: str) -> None:
    client = _redis()
    with client.pipeline() as pipe:
        for key in _keys(request, username):
            pipe.incr(key)
            pipe.expire(key, LOGIN_WINDOW_S, nx=True)  # the window starts at the first failure
        pipe.execute()


def login_succeeded(request: Any, username: str) -> None:
    _redis().delete(_keys(request, username)[0])


def forget_login_failures() -> None:
    """Tests: drop every count of this database's namespace."""
    from annotator.flags import key_prefix

    client = _redis()
    keys = list(client.scan_iter(match=f"{key_prefix()}login:*", count=1000))
    if keys:
        client.delete(*keys)


class ThrottledLoginMixin:
    """For Django's login forms (the site's and the admin's): refuse a throttled address before the
    password is checked, and count failures."""

    throttle_message = "Too many failed logins from your address. Try again in %(minutes)s minute(s)."

    def clean(self) -> dict[str, Any]:
        username = self.data.get("username", "") or ""
        if username:
            try:
                login_check(self.request, username)
            except LoginThrottled as exc:
                raise ValidationError(
                    self.throttle_message, code="throttled", params={"minutes": max(1, exc.retry_after // 60)}
                ) from None
        try:
            cleaned = super().clean()
        except ValidationError:
            if username:
                login_failed(self.request, username)
            raise
        login_succeeded(self.request, username)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


# --- API tokens -----------------------------------------------------------------------------------


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def password_fingerprint(user: Any) -> str:
    return salted_hmac("safeladder.api-token", user.password, algorithm="sha256").hexdigest()


def token_issue(*, user: Any) -> tuple[str, Any]:
    """A new token for `user`: (the key, shown once; the stored row)."""
    from annotator.models import ApiToken

    key = secrets.token_urlsafe(30)
    row = ApiToken.objects.create(
        user=user,
        key_hash=_digest(key),
        prefix=key[:8],
        expires_at=timezone.now() + timedelta(seconds=settings.API_TOKEN_TTL_S),
        password_fingerprint=password_fingerprint(user),
    )
    return key, row


def token_revoke(*, token: Any) -> None:
    token.delete()


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`. Expired tokens, tokens issued under an older password and tokens
    of inactive users are refused (401) with the reason. (DRF's class is the base only so the OpenAPI
    schema describes the scheme; its key lookup, which keeps keys in clear, is not used.)"""

    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        from annotator.models import ApiToken

        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: give `Token <key>`.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = ApiToken.objects.select_related("user").filter(key_hash=_digest(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("The token has expired; ask for a new one.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if not constant_time_compare(token.password_fingerprint, password_fingerprint(token.user)):
            raise exceptions.AuthenticationFailed("The password changed since this token was issued.")
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword
