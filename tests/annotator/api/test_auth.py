"""Real session login through the login form (CSRF enforced) and token auth for scripts."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_login_page_then_session_reaches_api(users, project):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b"Log in" in page.content
    token = page.cookies["csrftoken"].value
    response = client.post("/accounts/login/", {"username": "viewer", "password": PASSWORD,
                                                  "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    projects = client.get("/api/projects/").json()["results"]
    assert [p["name"] for p in projects] == ["Arithmetic safety"]
    # The home page sends a logged-in user to the browser UI (or lists the projects when it is not built).
    home = client.get("/", follow=True)
    assert home.status_code == 200
    assert b"Arithmetic safety" in home.content or b'id="root"' in home.content


@pytest.mark.django_db
def test_session_writes_need_csrf_token(users, project):
    client = Client(enforce_csrf_checks=True)
    client.login(username="owner", password=PASSWORD)
    response = client.post("/api/projects/", {"name": "no csrf"}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


@pytest.mark.django_db
def test_token_auth_for_scripts(users, project):
    client = Client()
    bad = client.post("/api/auth/token/", {"username": "owner", "password": "wrong"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "bad_credentials"
    token = client.post("/api/auth/token/", {"username": "owner", "password": PASSWORD},
                        content_type="application/json").json()["token"]
    response = client.get(f"/api/projects/{project.pk}/audit/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200
    # Token clients need no CSRF token: the header is the credential.
    created = client.post("/api/projects/", {"name": "scripted"}, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Token {token}")
    assert created.status_code == 201


@pytest.mark.django_db
def test_home_and_app_redirect_anonymous_to_login():
    for url in ("/", "/app/", "/app/projects/1/traces/2/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


@pytest.mark.django_db
def test_app_serves_the_ui_for_every_client_route(users, settings, tmp_path):
    dist = tmp_path / "frontend" / "dist"
    dist.mkdir(parents=True)
    (dist / "index.html").write_text('<!doctype html><div id="root"></div>')
    settings.BASE_DIR = tmp_path
    client = Client()
    client.login(username="viewer", password=PASSWORD)
    for url in ("/app/", "/app/projects/3/traces/9/"):
        response = client.get(url)
        assert response.status_code == 200 and b'<div id="root">' in response.content
        assert "csrftoken" in response.cookies  # the UI sends it back on writes
    assert client.get("/").url == "/app/"
