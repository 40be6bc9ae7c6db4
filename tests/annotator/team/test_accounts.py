"""Accounts without Django admin: a site admin creates users or hands out one-time invite links."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from annotator.models import Invite, Membership
from tests.annotator.team.conftest import api


def _admin():
    return get_user_model().objects.create_user(username="site", password="pw-long-enough-123", is_staff=True)


def test_only_site_admins_create_users_and_invites(project, users):
    for role in ("owner", "supervisor"):
        client = api(users[role])
        assert client.post("/api/users/", {"username": "x", "password": "pw-long-enough-123"},
                           format="json").status_code == 403
        assert client.post("/api/invites/", {"project": project.pk}, format="json").status_code == 403
        assert client.get("/api/invites/").status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().post("/api/users/", {"username": "x", "password": "p"}, format="json").status_code == 401
    admin = api(_admin())
    made = admin.post("/api/users/", {"username": "carol", "password": "pw-long-enough-123"}, format="json")
    assert made.status_code == 201 and made.json()["username"] == "carol"
    weak = admin.post("/api/users/", {"username": "dave", "password": "123"}, format="json")
    assert weak.status_code == 400 and weak.json()["code"] == "bad_password"
    taken = admin.post("/api/users/", {"username": "Carol", "password": "pw-long-enough-123"}, format="json")
    assert taken.status_code == 409 and taken.json()["code"] == "username_taken"
    assert not get_user_model().objects.filter(username="dave").exists()
    assert api(users["viewer"]).get("/api/me/").json() == {"id": users["viewer"].pk, "username": "viewer",
                                                           "is_site_admin": False}


def test_an_invite_link_sets_a_password_joins_the_project_and_works_once(project):
    admin = api(_admin())
    created = admin.post("/api/invites/", {"project": project.pk, "role": "reviewer"}, format="json")
    assert created.status_code == 201
    link = created.json()["link"]
    assert link.startswith("http://testserver/accounts/invite/")
    path = link.removeprefix("http://testserver")
    assert Invite.objects.get().token_hash not in link  # only the hash is stored

    browser = Client()
    page = browser.get(path)
    assert page.status_code == 200 and b"Arithmetic safety" in page.content and b"reviewer" in page.content
    mismatch = browser.post(path, {"username": "erin", "password": "pw-long-enough-123", "password2": "other"})
    assert mismatch.status_code == 400 and not get_user_model().objects.filter(username="erin").exists()
    joined = browser.post(path, {"username": "erin", "password": "pw-long-enough-123",
                                 "password2": "pw-long-enough-123"})
    assert joined.status_code == 302 and joined["Location"] == f"/app/projects/{project.pk}/"
    erin = get_user_model().objects.get(username="erin")
    assert Membership.objects.get(project=project, user=erin).role == "reviewer"
    assert browser.get(f"/api/projects/{project.pk}/").json()["my_role"] == "reviewer"  # logged in
    assert Client().login(username="erin", password="pw-long-enough-123")

    again = Client().post(path, {"username": "frank", "password": "pw-long-enough-123",
                                 "password2": "pw-long-enough-123"})
    assert again.status_code == 409 and b"used already" in again.content
    assert not get_user_model().objects.filter(username="frank").exists()
    listed = admin.get("/api/invites/").json()["results"][0]
    assert (listed["state"], listed["used_by"]["username"]) == ("used", "erin")


def test_expired_and_unknown_links_say_so_and_an_existing_account_can_join(project, users):
    admin = api(_admin())
    body = admin.post("/api/invites/", {"project": project.pk, "role": "supervisor"}, format="json").json()
    path = body["link"].removeprefix("http://testserver")
    token = path.rstrip("/").rsplit("/", 1)[1]
    Invite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = Client().get(path)
    assert expired.status_code == 409 and b"expired" in expired.content
    assert api(users["outsider"]).post(f"/api/invites/accept/{token}/", {}, format="json").json()["code"] == (
        "invite_expired")
    assert Client().get("/accounts/invite/not-a-token/").status_code == 404
    Invite.objects.update(expires_at=timezone.now() + timedelta(hours=1))
    joined = api(users["outsider"]).post(f"/api/invites/accept/{token}/", {}, format="json")
    assert joined.status_code == 201 and joined.json()["role"] == "supervisor"
    assert Membership.objects.get(project=project, user=users["outsider"]).role == "supervisor"
