from __future__ import annotations

from typing import Any

from django.db import models

from annotator.models import AuditEvent, Project


def audit_record(
    *,
    project: Project | None,
    actor: Any,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Call it inside the transaction of the write it records."""
    if target is not None:
        target_type = target._meta.model_name or ""
        target_id = target.pk
    return AuditEvent.objects.create(
        project=project,
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        data=data or {},
    )
