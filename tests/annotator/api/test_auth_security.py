"""Login throttling (per account and per real client address, on every login door) and API tokens
(hashed, expiring, revocable, revoked by a password change)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from annotator.models import ApiToken
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
TOKEN_URL = "/api/auth/token/"


def _token(client: Client, password: str, username: str = "owner", **extra):
    return client.post(TOKEN_URL, {"username": username, "password": password}, content_type="application/json",
                       **extra)


def _form_login(client: Client, url: str, password: str, username: str = "owner"):
    page = client.get(url)
    assert page.status_code == 200
    return client.post(url, {"username": username, "password": password, "next": "/"})


def test_spoofed_forwarded_for_does_not_escape_the_token_throttle(users):
    """20 attempts, each with a new X-Forwarded-For, from one untrusted address: the header is ignored."""
    client = Client(REMOTE_ADDR="203.0.113.7")
    codes = [_token(client, "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(20)]
    assert codes[:5] == [400] * 5
    assert set(codes[5:]) == {429}
    throttled = _token(client, "wrong", HTTP_X_FORWARDED_FOR="198.51.100.250")
    assert throttled.json()["code"] == "throttled" and int(throttled["Retry-After"]) > 0


def test_a_throttled_address_does_not_lock_the_account_for_everyone(users):
    attacker, user = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="192.0.2.10")
    for _ in range(6):
        _token(attacker, "wrong")
    assert _token(attacker, PASSWORD).status_code == 429  # the right password, from the throttled address
    assert _token(user, PASSWORD).status_code == 200  # the owner, elsewhere, still gets in
    assert _token(attacker, PASSWORD, username="viewer").status_code == 200  # other accounts from there too


def test_one_address_trying_many_accounts_is_throttled(users):
    client = Client(REMOTE_ADDR="203.0.113.8")
    for i in range(20):
        _token(client, "wrong", username=f"nobody-{i}")
    assert _token(client, PASSWORD, username="viewer").status_code == 429
    assert _token(Client(REMOTE_ADDR="192.0.2.11"), PASSWORD, username="viewer").status_code == 200


def test_forwarded_for_is_believed_from_a_trusted_proxy_only(users, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(6):  # one client behind the proxy
        _token(proxy, "wrong", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.3")
    assert _token(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    # Another client behind the same proxy is someone else.
    assert _token(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.12").status_code == 200
    # A header spoofed by the client is to the left of the proxy's own: the right-most untrusted one counts.
    assert _token(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.12, 203.0.113.9").status_code == 429


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_the_login_forms_are_throttled_too(users, url):
    users["owner"].is_staff = True
    users["owner"].save(update_fields=["is_staff"])
    client = Client(REMOTE_ADDR="203.0.113.20")
    for _ in range(30):
        _form_login(client, url, "wrong")
    refused = _form_login(client, url, PASSWORD)
    assert refused.status_code == 200 and b"Too many failed logins" in refused.content
    assert "_auth_user_id" not in client.session
    elsewhere = Client(REMOTE_ADDR="192.0.2.20")
    assert _form_login(elsewhere, url, PASSWORD).status_code == 302
    assert elsewhere.session["_auth_user_id"] == str(users["owner"].pk)


def test_success_is_not_counted_and_clears_the_account_count(users):
    client = Client(REMOTE_ADDR="203.0.113.30")
    for _ in range(50):
        assert _token(client, PASSWORD).status_code == 200
    for _ in range(4):
        _token(client, "wrong")
    assert _token(client, PASSWORD).status_code == 200
    for _ in range(4):
        _token(client, "wrong")
    assert _token(client, PASSWORD).status_code == 200  # the count started again after the success


# --- tokens ---------------------------------------------------------------------------------------


def _projects(token: str):
    return Client().get("/api/projects/", HTTP_AUTHORIZATION=f"Token {token}")


def test_only_a_hash_of_the_token_is_stored(users):
    body = _token(Client(), PASSWORD).json()
    row = ApiToken.objects.get(user=users["owner"])
    assert body["token"] not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    assert body["token"].startswith(row.prefix)
    assert _projects(body["token"]).status_code == 200


def test_tokens_expire(users):
    token = _token(Client(), PASSWORD).json()["token"]
    ApiToken.objects.filter(user=users["owner"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _projects(token)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_logout_revokes_the_token(users):
    first = _token(Client(), PASSWORD).json()["token"]
    second = _token(Client(), PASSWORD).json()["token"]
    response = Client().post("/api/auth/logout/", HTTP_AUTHORIZATION=f"Token {first}")
    assert response.status_code == 204
    assert _projects(first).status_code == 401
    assert _projects(second).status_code == 200  # another script's token stays valid
    assert Client().post("/api/auth/logout/").status_code == 401


def test_a_password_change_revokes_every_token(users):
    token = _token(Client(), PASSWORD).json()["token"]
    users["owner"].set_password("a-brand-new-password-2")
    users["owner"].save()
    response = _projects(token)
    assert response.status_code == 401 and "password changed" in response.json()["detail"]
