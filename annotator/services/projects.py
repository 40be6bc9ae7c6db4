from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from annotator.errors import Conflict, InvalidInput
from annotator.generation.backends import SamplingParams
from annotator.models import Membership, Project, Role, StepRule
from annotator.services.audit import audit_record

User = get_user_model()

PROJECT_FIELDS = {"name", "guidelines", "label_schema", "generation_defaults", "step_rule", "autotrain_policy",
                  "supervision"}


def _check_project_fields(fields: dict[str, Any], project_id: int | None = None) -> None:
    if "serving_model" in fields:
        # One door to serving: promotion loads the model into its server and audits the switch.
        raise InvalidInput(
            "serving_model is not set by editing the project; promote a model version instead: "
            "POST /api/projects/{project}/models/{version}/promote/.",
            code="use_promote",
        )
    unknown = set(fields) - PROJECT_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown project fields: {', '.join(sorted(unknown))}.")
    if "name" in fields and not str(fields["name"]).strip():
        raise InvalidInput("A project needs a name.")
    if "step_rule" in fields and fields["step_rule"] not in StepRule.values:
        raise InvalidInput(f"step_rule must be one of {', '.join(StepRule.values)}.")
    if "generation_defaults" in fields:
        # Checked here, not only when a trace starts: a bad default would fail every later generation.
        defaults = fields["generation_defaults"]
        if not isinstance(defaults, dict):
            raise InvalidInput("generation_defaults must be an object.")
        try:
            SamplingParams.from_dict(defaults)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"Bad generation_defaults: {exc}.") from None
    if "supervision" in fields:
        from annotator.supervision import supervision_from_json

        fields["supervision"] = supervision_from_json(fields["supervision"], project_id=project_id).as_json()


@transaction.atomic
def project_create(*, owner: Any, name: str, **fields: Any) -> Project:
    fields["name"] = name
    _check_project_fields(fields)
    project = Project.objects.create(created_by=owner, **fields)
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    audit_record(project=project, actor=owner, action="project.created", target=project, data={"name": name})
    return project


@transaction.atomic
def project_update(*, project: Project, actor: Any, **fields: Any) -> Project:
    _check_project_fields(fields, project.pk)
    for key, value in fields.items():
        setattr(project, key, value)
    project.save(update_fields=list(fields))
    audit_record(project=project, actor=actor, action="project.updated", target=project, data={"fields": fields})
    return project


@transaction.atomic
def project_delete(*, project: Project, actor: Any) -> None:
    audit_record(project=None, actor=actor, action="project.deleted", target=project, data={"name": project.name})
    project.delete()


def _owners_left(project: Project, excluding: Membership) -> int:
    return project.memberships.filter(role=Role.OWNER).exclude(pk=excluding.pk).count()


@transaction.atomic
def membership_add(*, project: Project, actor: Any, username: str, role: str) -> Membership:
    if role not in Role.values:
        raise InvalidInput(f"role must be one of {', '.join(Role.values)}.")
    user = User.objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"No user named {username!r}.", code="unknown_user")
    if Membership.objects.filter(project=project, user=user).exists():
        raise Conflict(f"{username} is already a member of this project.")
    membership = Membership.objects.create(project=project, user=user, role=role)
    audit_record(
        project=project,
        actor=actor,
        action="membership.added",
        target=membership,
        data={"user": username, "role": role},
    )
    return membership


@transaction.atomic
def membership_update(*, membership: Membership, actor: Any, role: str) -> Membership:
    if role not in Role.values:
        raise InvalidInput(f"role must be one of {', '.join(Role.values)}.")
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and role != Role.OWNER and _owners_left(membership.project, membership) == 0:
        raise Conflict("A project needs at least one owner.")
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        project=membership.project,
        actor=actor,
        action="membership.updated",
        target=membership,
        data={"user": membership.user.username, "from": old, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Any) -> None:
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and _owners_left(membership.project, membership) == 0:
        raise Conflict("A project needs at least one owner.")
    audit_record(
        project=membership.project,
        actor=actor,
        action="membership.removed",
        target=membership,
        data={"user": membership.user.username, "role": membership.role},
    )
    membership.delete()
