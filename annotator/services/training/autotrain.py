"""The project's auto-train policy: a new automatic run after every N corrections.

``autotrain_nudge`` is called by ``correction_create`` in its transaction; when the project's
policy is on, it enqueues ``trainer_worker.autotrain_check`` on commit. The check (a task on the
default queue) counts the corrections since the last automatic run, builds the snapshot and
creates the run.

Policy keys (``Project.autotrain_policy``): ``enabled``, ``every_n_corrections`` (20),
``stage`` ("sft"), ``snapshot_kind`` ("sft"), ``config`` (the run's config), ``base_model`` (a
model version id; default: the serving model), ``filters`` (the snapshot's corpus filter).
"""

from __future__ import annotations

import logging

from django.db import transaction

from annotator.enqueue import AUTOTRAIN_CHECK, enqueue_on_commit
from annotator.errors import InvalidInput
from annotator.models import Correction, ModelVersion, Project, Stage, TrainingRun
from annotator.services.audit import audit_record
from annotator.services.snapshots import snapshot_build, snapshot_create
from annotator.services.training.runs import ACTIVE, run_create

log = logging.getLogger(__name__)


def autotrain_nudge(*, project_id: int) -> None:
    """A correction of the project is being committed: let the policy task look, once it commits."""
    policy = Project.objects.filter(pk=project_id).values_list("autotrain_policy", flat=True).first()
    if policy and policy.get("enabled"):
        enqueue_on_commit(AUTOTRAIN_CHECK, project_id=project_id)


def autotrain_check(*, project_id: int) -> TrainingRun | None:
    """Start an automatic run when N corrections arrived since the last automatic run's start.

    The project row is locked for the check, so two checks never both start one; no automatic run
    starts while another of the project is queued or running. The snapshot is built right here (in
    the policy task) so the run is created with a ready snapshot.
    """
    with transaction.atomic():
        project = Project.objects.select_for_update().filter(pk=project_id).first()
        if project is None:
            return None
        policy = project.autotrain_policy or {}
        if not policy.get("enabled"):
            return None
        runs = TrainingRun.objects.filter(project=project, automatic=True)
        if runs.filter(status__in=ACTIVE).exists():
            return None
        last = runs.order_by("-created_at").values_list("created_at", flat=True).first()
        corrections = Correction.objects.filter(project=project)
        if last is not None:
            corrections = corrections.filter(created_at__gt=last)
        if corrections.count() < int(policy.get("every_n_corrections", 20)):
            return None
        stage = policy.get("stage", Stage.SFT)
        base = project.serving_model
        if policy.get("base_model"):
            base = ModelVersion.objects.filter(project=project, pk=policy["base_model"]).first()
        if base is None:
            log.warning("auto-train of project %s: no base model", project_id)
            return None
        snapshot = snapshot_create(project=project, actor=None, kind=policy.get("snapshot_kind", "sft"),
                                   filters=policy.get("filters"), name=f"auto {stage}")
    snapshot = snapshot_build(snapshot_id=snapshot.pk)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project_id)
        if TrainingRun.objects.filter(project=project, automatic=True, status__in=ACTIVE).exists():
            return None
        try:
            return run_create(project=project, actor=None, stage=stage, base_model=base, snapshots=[snapshot],
                              config=policy.get("config") or {}, automatic=True)
        except InvalidInput as exc:
            audit_record(project=project, actor=None, action="autotrain.failed", target_type="project",
                         target_id=project.pk, data={"error": exc.message, "snapshot": snapshot.pk})
            return None
