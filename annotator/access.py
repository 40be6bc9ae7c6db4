"""The one permission gate. Every REST view and websocket consumer calls it before any service.

Non-members learn nothing about a project: they get NotFound (404), exactly as for an id that does
not exist. Members whose role is too low get Forbidden (403).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from annotator.errors import Forbidden, NotFound
from annotator.models import Membership, Role


def access_project(
    user: AbstractBaseUser | AnonymousUser, project_id: int | str, *, role: str = Role.VIEWER
) -> Membership:
    """Return the user's membership in the project, or raise NotFound / Forbidden."""
    if user is None or not user.is_authenticated:
        raise NotFound("Project not found.")
    try:
        pid = int(project_id)
    except (TypeError, ValueError):
        raise NotFound("Project not found.") from None
    membership = Membership.objects.select_related("project").filter(project_id=pid, user=user).first()
    if membership is None:
        raise NotFound("Project not found.")
    if Role.rank(membership.role) < Role.rank(role):
        raise Forbidden(f"This needs the {role} role in the project; you are a {membership.role}.")
    return membership


def access_site_admin(user: AbstractBaseUser | AnonymousUser) -> None:
    """Site-wide administration (accounts, invites): staff users only. Others get Forbidden (403);
    the REST layer answers anonymous callers 401 before this."""
    if user is None or not user.is_authenticated:
        raise NotFound("Not found.")
    if not (user.is_staff or user.is_superuser):
        raise Forbidden("This needs a site administrator (a staff account).")
