"""Telling people that a run ended: the project's open pages (a notification) and its webhooks.

Called once a run is over, by the train task after ``run_execute`` and by ``run_cancel`` for a run
that never started. Idempotent: the announcement is an audit event, and a second call (a
redelivered task) finds it and sends nothing.
"""

from __future__ import annotations

from django.db import transaction

from annotator.models import AuditEvent, RunStatus, TrainingRun
from annotator.services.audit import audit_record
from annotator.services.webhooks import webhook_emit

ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


@transaction.atomic
def run_ended(*, run_id: int) -> bool:
    """Announce a run that is over (once). Returns whether this call announced it."""
    run = (
        TrainingRun.objects.select_for_update(of=("self",)).select_related("project", "created_by")
        .filter(pk=run_id).first()
    )
    if run is None or run.status not in ENDED:
        return False
    if AuditEvent.objects.filter(action="training_run.announced", target_type="trainingrun",
                                 target_id=str(run.pk)).exists():
        return False
    data = {
        "run": run.pk,
        "stage": run.stage,
        "status": run.status,
        "output_model": run.output_model_id,
        "error": run.error[:500],
        "automatic": run.automatic,
        "started_by": getattr(run.created_by, "username", None),
    }
    audit_record(project=run.project, actor=None, action="training_run.announced", target=run,
                 data={"status": run.status})
    webhook_emit(project=run.project, event_type="run.finished", data=data)
    from annotator import events

    transaction.on_commit(lambda: events.publish_project_event(run.project_id, "run.finished", **data))
    return True
