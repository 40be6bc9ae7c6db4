"""Training runs, the request side (REST, the policy task): create and cancel.

``run_create`` validates everything up front (stage, snapshots, the trainer's own
``StageConfig.validate``), pins the snapshots and enqueues ``trainer_worker.train`` with the run id
once the transaction commits. ``run_cancel`` sets ``cancelling`` (a queued run goes straight to
``cancelled``) and raises the run's cancel flag on commit; the trainer polls it after every
optimiser step (``worker``), so training stops after the step in flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotator import events, flags, supervision
from annotator.enqueue import TRAIN, enqueue_on_commit
from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.models import DatasetSnapshot, ModelVersion, Project, RunStatus, SnapshotStatus, Stage, TrainingRun
from annotator.services.audit import audit_record
from annotator.services.snapshots import snapshot_file
from trainer_worker.training.config import ConfigError, StageConfig

# Which snapshot kinds feed which stage (docs/datasets.md lists the columns of each kind).
STAGE_KINDS: dict[str, tuple[str, ...]] = {
    Stage.SFT: ("sft", "sft_prompt_completion"),
    Stage.DPO: ("preference", "preference_step"),
    Stage.REWARD: ("preference",),
    Stage.VERIFIER: ("verifier_safety", "verifier_value", "verifier_knowledge"),
    Stage.PRM: ("stepwise",),
    Stage.GRPO: ("rl_prompts",),
}
# Stages whose output generates text: those are evaluated on the held-out prompts.
GENERATIVE = {Stage.SFT, Stage.DPO, Stage.GRPO}
# Settings the studio fills in itself; a run's config may not set them.
STUDIO_KEYS = ("stage", "base_model_path", "output_dir", "dataset_path", "eval_dataset_path")
# A run's config may carry {"eval": {...}} for the evaluation after training (not a trainer setting).
EVAL_DEFAULTS = {"max_prompts": 64, "max_new_tokens": 128, "batch_size": 8}
EVAL_LIMITS = {"max_prompts": (1, 5000), "max_new_tokens": (1, 2048), "batch_size": (1, 512)}
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING)


def run_dir(run_id: int) -> Path:
    """The run's own folder: checkpoints, the final model, a merged checkpoint."""
    return Path(settings.MODEL_STORE) / "runs" / str(run_id)


def model_path(version: ModelVersion) -> str:
    return version.path or version.base_model


def stage_config_dict(
    config: dict[str, Any], *, stage: str, base_path: str, output_dir: str, dataset_path: str, kinds: set[str]
) -> dict[str, Any]:
    """The trainer's settings of a run: its config plus what the studio fills in itself."""
    trainer = {k: v for k, v in config.items() if k != "eval"}
    values: dict[str, Any] = {"logging_steps": 1, **trainer}
    values.update(stage=stage, base_model_path=base_path, output_dir=output_dir, dataset_path=dataset_path)
    if stage == Stage.VERIFIER and "verifier_kind" not in trainer and len(kinds) == 1:
        values["verifier_kind"] = next(iter(kinds)).removeprefix("verifier_")
    return values


def publish_progress(run_id: int) -> None:
    """Tell the run's watchers its progress and status as the database has them now."""
    row = TrainingRun.objects.filter(pk=run_id).values("progress", "status", "error", "output_model_id").first()
    if row is not None:
        events.publish_run_event(
            run_id, "run.progress", progress=row["progress"], status=row["status"], error=row["error"],
            output_model=row["output_model_id"],
        )


def _validate_config(stage: str, config: dict[str, Any], base_path: str, dataset_path: str, kinds: set[str],
                     project_id: int | None = None) -> None:
    problems: list[str] = []
    given = sorted(k for k in STUDIO_KEYS if k in config)
    if given:
        problems.append(f"the studio sets {', '.join(given)} itself; leave them out of config")
    evaluation = config.get("eval", {})
    if not isinstance(evaluation, dict) or set(evaluation) - {*EVAL_DEFAULTS, "guide"}:
        problems.append(f"config.eval must be an object with some of: {', '.join([*EVAL_DEFAULTS, 'guide'])}")
    else:
        if "guide" in evaluation:
            try:
                supervision.guide_check(evaluation["guide"], project_id=project_id)
            except InvalidInput as exc:
                problems.append(f"config.eval.guide: {exc.message}")
        for key, value in evaluation.items():
            if key == "guide":
                continue
            low, high = EVAL_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"config.eval.{key} must be an integer from {low} to {high}")
    if stage == Stage.VERIFIER and "verifier_kind" in config and kinds != {f"verifier_{config['verifier_kind']}"}:
        problems.append(f"verifier_kind {config['verifier_kind']!r} does not match the snapshot kinds {sorted(kinds)}")
    if not problems:
        values = stage_config_dict(
            config, stage=stage, base_path=base_path, output_dir=str(run_dir(0)), dataset_path=dataset_path, kinds=kinds
        )
        try:
            StageConfig.from_dict(values).validate()
        except ConfigError as exc:
            problems.extend(exc.problems)
        except (TypeError, ValueError) as exc:  # a value of the wrong type, e.g. "max_steps": "ten"
            problems.append(f"a setting has the wrong type: {exc}")
    if problems:
        raise InvalidInput("The training configuration cannot run: " + "; ".join(problems), details=problems)


@transaction.atomic
def run_create(
    *,
    project: Project,
    actor: Any,
    stage: Any,
    base_model: ModelVersion,
    snapshots: list[DatasetSnapshot],
    config: Any = None,
    automatic: bool = False,
) -> TrainingRun:
    """A queued training run of ``stage`` from ``base_model`` on ``snapshots``; training starts once
    the transaction commits. Raises InvalidInput listing every problem of the request."""
    config = {} if config is None else config
    if stage not in Stage.values:
        raise InvalidInput(f"Unknown stage {stage!r}. Known: {', '.join(Stage.values)}.", code="bad_stage")
    if not isinstance(config, dict):
        raise InvalidInput("config must be an object of trainer settings.")
    if base_model.project_id != project.pk:
        raise NotFound("Model version not found.")
    if base_model.adapter_path and not base_model.path:
        raise InvalidInput("Training starts from a full checkpoint; this model version is only a LoRA adapter.")
    if not snapshots:
        raise InvalidInput("A run needs at least one dataset snapshot.", code="no_snapshot")
    problems = []
    for snap in snapshots:
        if snap.project_id != project.pk:
            raise NotFound("Dataset not found.")
        if snap.status != SnapshotStatus.READY:
            problems.append(f"dataset {snap.pk} is {snap.status}, not ready")
        if snap.kind not in STAGE_KINDS[stage]:
            problems.append(
                f"dataset {snap.pk} is of kind {snap.kind}; the {stage} stage trains on {', '.join(STAGE_KINDS[stage])}"
            )
    kinds = {s.kind for s in snapshots}
    if len(kinds) > 1:
        problems.append(f"the snapshots of one run must share a kind (got {', '.join(sorted(kinds))})")
    if problems:
        raise InvalidInput("These datasets cannot feed this run: " + "; ".join(problems), details=problems)
    dataset_path = str(snapshot_file(snapshots[0], "parquet")[0])
    _validate_config(stage, config, model_path(base_model), dataset_path, kinds, project_id=project.pk)

    run = TrainingRun.objects.create(
        project=project, stage=stage, base_model=base_model, config=config, automatic=automatic,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    run.snapshots.set(snapshots)
    audit_record(
        project=project,
        actor=actor,
        action="training_run.created",
        target=run,
        data={"stage": stage, "base_model": base_model.pk, "snapshots": [s.pk for s in snapshots],
              "config": config, "automatic": automatic},
    )
    enqueue_on_commit(TRAIN, run_id=run.pk)
    return run


@transaction.atomic
def run_cancel(*, run: TrainingRun, actor: Any) -> TrainingRun:
    """Stop a run: a queued one is cancelled at once, a running one after its optimiser step in
    flight. Raises Conflict when the run is already over."""
    locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if locked.status in TERMINAL:
        raise Conflict(f"Run {locked.pk} already {locked.status}.", code="bad_state", details={"status": locked.status})
    if locked.status == RunStatus.QUEUED:
        # Nothing runs yet: the task finds it cancelled when it is delivered and does nothing.
        locked.status = RunStatus.CANCELLED
        locked.finished_at = timezone.now()
        locked.save(update_fields=["status", "finished_at"])
    elif locked.status == RunStatus.RUNNING:
        locked.status = RunStatus.CANCELLING
        locked.save(update_fields=["status"])
    audit_record(project=locked.project, actor=actor, action="training_run.cancelled", target=locked,
                 data={"status": locked.status})
    flags.raise_cancel_on_commit(locked.pk)
    transaction.on_commit(lambda: publish_progress(locked.pk))
    if locked.status == RunStatus.CANCELLED:
        from annotator.services.training.notify import run_ended

        run_ended(run_id=locked.pk)
    return locked
