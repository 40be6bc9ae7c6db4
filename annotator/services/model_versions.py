"""Model versions: register, edit, and promote one to serving.

``model_promote`` is the only door to ``Project.serving_model`` (``project_update`` refuses the
field and points here): it loads a vLLM LoRA adapter into the server first, then switches the
project and audits the promotion.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from annotator import outbound
from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.generation.backends import GenerationError
from annotator.models import Backend, ModelVersion, Project
from annotator.services.audit import audit_record
from annotator.services.generation import backend_for

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
    outbound.model_version_check(ModelVersion(project=project, **fields))
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
    if fields.keys() & {"base_model", "path", "adapter_path", "backend", "backend_options"}:
        outbound.model_version_check(version)  # a notes-only edit of an older row is not refused for its paths
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


def _load_adapter(version: ModelVersion) -> None:
    """Load a vLLM LoRA version into its server (an HTTP call). Raises Conflict when it fails."""
    try:
        backend_for(version).load_lora_adapter(version.backend_options.get("served_name") or version.name,
                                               version.adapter_path)
    except GenerationError as exc:
        if "already been loaded" not in str(exc):  # promoted before: the server still has it
            raise Conflict(f"The vLLM server did not load the adapter: {exc}", code="backend_error") from exc


def model_promote(*, version: ModelVersion, actor: Any) -> Project:
    """Make ``version`` the project's serving model. The next trace generates with it: the local
    backend caches models by path and every run writes a new path; a vLLM LoRA version is loaded
    into the server first, so a failure leaves the old model serving.

    The load happens before the project row is locked, so a slow server never holds the lock (nor
    the requests that wait on it); call this outside a transaction for the same reason. Two
    promotions racing end with the one that commits last.
    """
    if version.backend == Backend.VLLM and version.adapter_path:
        _load_adapter(version)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=version.project_id)
        previous = project.serving_model_id
        project.serving_model = version
        project.save(update_fields=["serving_model"])
        audit_record(project=project, actor=actor, action="model_version.promoted", target=version,
                     data={"previous": previous, "name": version.name})
        from annotator.services.webhooks import webhook_emit

        webhook_emit(project=project, event_type="model.promoted", data={
            "model_version": version.pk, "name": version.name, "previous": previous,
            "by": getattr(actor, "username", None), "produced_by": version.produced_by_id})
    return project
