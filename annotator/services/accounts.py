"""Accounts: a site admin creates users, or hands out a one-time invite link.

There is no mail server: the link is shown to the admin who made it (once; only its SHA-256 is
kept). Whoever opens it sets a username and a password (or, already logged in, uses their own
account) and joins the invite's project with its role. A link works once and expires after
``INVITE_TTL_HOURS``.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.models import Invite, Membership, Project, Role
from annotator.services.audit import audit_record

User = get_user_model()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_password(password: Any, user: Any = None) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidInput("A password is needed.", code="bad_password")
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), code="bad_password", details={"password": exc.messages}) from None
    return password


def _check_username(username: Any) -> str:
    if not isinstance(username, str) or not username.strip():
        raise InvalidInput("A username is needed.", code="bad_username")
    username = username.strip()
    field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        field.run_validators(username)
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), code="bad_username") from None
    if len(username) > field.max_length:
        raise InvalidInput(f"A username has at most {field.max_length} characters.", code="bad_username")
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(f"The username {username!r} is taken.", code="username_taken")
    return username


@transaction.atomic
def user_create(*, actor: Any, username: Any, password: Any, email: Any = "", is_staff: bool = False) -> Any:
    """A new account (site admins only; the view checks)."""
    name = _check_username(username)
    candidate = User(username=name, email=email or "")
    _check_password(password, candidate)
    user = User.objects.create_user(username=name, password=password, email=email or "", is_staff=bool(is_staff))
    audit_record(project=None, actor=actor, action="user.created", target=user,
                 data={"username": name, "is_staff": bool(is_staff)})
    return user


@transaction.atomic
def invite_create(*, actor: Any, project: Project, role: Any = Role.SUPERVISOR, note: Any = "") -> tuple[Invite, str]:
    """(invite, token): the token is returned this once, for the link."""
    if role not in Role.values:
        raise InvalidInput(f"role must be one of {', '.join(Role.values)}.")
    token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        token_hash=_token_hash(token),
        project=project,
        role=role,
        note=str(note or "")[:200],
        created_by=actor,
        expires_at=timezone.now() + timedelta(hours=settings.INVITE_TTL_HOURS),
    )
    audit_record(project=project, actor=actor, action="invite.created", target=invite, data={"role": role})
    return invite, token


def invite_state(invite: Invite) -> str:
    if invite.used_at is not None:
        return "used"
    if invite.expires_at <= timezone.now():
        return "expired"
    return "open"


def invite_lookup(token: Any) -> Invite:
    """The open invite of this token, or NotFound / Conflict (used, expired) saying which."""
    if not isinstance(token, str) or not token:
        raise NotFound("This invite link is not valid.", code="bad_invite")
    invite = Invite.objects.select_related("project").filter(token_hash=_token_hash(token)).first()
    if invite is None:
        raise NotFound("This invite link is not valid.", code="bad_invite")
    state = invite_state(invite)
    if state == "used":
        raise Conflict("This invite link has been used already; ask for a new one.", code="invite_used")
    if state == "expired":
        raise Conflict("This invite link has expired; ask for a new one.", code="invite_expired")
    return invite


@transaction.atomic
def invite_accept(
    *, token: Any, user: Any = None, username: Any = None, password: Any = None
) -> tuple[Any, Membership]:
    """Use the invite: as the logged-in ``user``, or as a new account (``username``, ``password``).
    Returns (user, membership). The invite is locked, so two people racing for one link get one."""
    found = invite_lookup(token)
    invite = Invite.objects.select_for_update().get(pk=found.pk)
    if invite_state(invite) != "open":
        raise Conflict("This invite link has been used already; ask for a new one.", code="invite_used")
    if user is None or not user.is_authenticated:
        name = _check_username(username)
        _check_password(password, User(username=name))
        user = User.objects.create_user(username=name, password=password)
        audit_record(project=None, actor=user, action="user.created", target=user,
                     data={"username": name, "invite": invite.pk})
    membership = Membership.objects.filter(project=invite.project, user=user).first()
    if membership is None:
        membership = Membership.objects.create(project=invite.project, user=user, role=invite.role)
    elif Role.rank(invite.role) > Role.rank(membership.role):
        membership.role = invite.role  # an invite never lowers a role someone already has
        membership.save(update_fields=["role"])
    invite.used_at, invite.used_by = timezone.now(), user
    invite.save(update_fields=["used_at", "used_by"])
    audit_record(project=invite.project, actor=user, action="invite.accepted", target=invite,
                 data={"user": user.username, "role": membership.role})
    return user, membership


@transaction.atomic
def invite_revoke(*, invite: Invite, actor: Any) -> None:
    audit_record(project=invite.project, actor=actor, action="invite.revoked", target=invite)
    invite.delete()
