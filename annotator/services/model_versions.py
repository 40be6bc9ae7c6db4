from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.models import Backend, ModelVersion, Project
from annotator.services.audit import audit_record

FIELDS = {"name", "base_model", "path", "adapter_path", "backend", "backend_options", "notes", "parent"}


def _check(project: Project, fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - FIELDS
    if unknown:
        raise InvalidInput(f"Unknown model version fields: {', '.join(sorted(unknown))}.")
    if "backend" in fields and fields["backend"] not in Backend.values:
        raise InvalidInput(f"backend must be one of {', '.join(Backend.values)}.")
    if "name" in fields and not str(fields["name"]).strip():
        raise InvalidInput("A model version needs a name.")
    parent = fields.get("parent")
    if parent is not None and parent.project_id != project.pk:
        raise NotFound("Parent model version not found.")
    if "backend_options" in fields and not isinstance(fields["backend_options"], dict):
        raise InvalidInput("backend_options must be an object.")
    return fields


@transaction.atomic
def model_version_create(*, project: Project, actor: Any, **fields: Any) -> ModelVersion:
    fields = _check(project, fields)
    if not fields.get("base_model"):
        raise InvalidInput("base_model (a checkpoint path or served model name) is required.")
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(project=project, **fields)
    except IntegrityError:
        raise Conflict(f"A model version named {fields.get('name')!r} exists in this project.") from None
    audit_record(
        project=project,
        actor=actor,
        action="model_version.created",
        target=version,
        data={"name": version.name, "backend": version.backend, "parent": version.parent_id},
    )
    return version


@transaction.atomic
def model_version_update(*, version: ModelVersion, actor: Any, **fields: Any) -> ModelVersion:
    fields = _check(version.project, fields)
    for key, value in fields.items():
        setattr(version, key, value)
    try:
        with transaction.atomic():
            version.save(update_fields=[("parent" if k == "parent" else k) for k in fields])
    except IntegrityError:
        raise Conflict(f"A model version named {fields.get('name')!r} exists in this project.") from None
    audit_record(
        project=version.project,
        actor=actor,
        action="model_version.updated",
        target=version,
        data={"fields": sorted(fields)},
    )
    return version
