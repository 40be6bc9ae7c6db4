"""Training runs, promotion and the auto-train policy: the closed loop from corrections to serving.

Request side (REST, policy task): ``run_create`` validates everything up front (stage, snapshots,
the trainer's own ``StageConfig.validate``), pins the snapshots and enqueues ``trainer_worker.train``
with the run id once the transaction commits. ``run_cancel`` asks a run to stop; ``model_promote``
makes a model version the project's serving model.

Worker side: ``run_execute`` is what the train task calls. It claims the run under a row lock,
trains through ``trainer_worker.training.runner.run_stage`` and registers and evaluates the model.

Ownership and redelivery. Tasks are late-acked: a worker that dies leaves its message unacked and
Redis hands it out again after the visibility timeout. A claimed run carries a heartbeat, a Redis
key with a short expiry that a thread of the owning process renews while it trains. A delivery for a
run that is running with a live heartbeat is a duplicate (a healthy run outlasted the visibility
timeout) and is dropped; one whose heartbeat has expired finds a dead owner and resumes from the last
checkpoint in the run's own output folder (``MODEL_STORE/runs/<run id>/``). A run that already
succeeded, failed or was cancelled is never trained again, and the model version is registered under
the run's row lock with ``produced_by`` checked first, so a redelivery cannot create a second one.
``runs_recover`` (called when a train worker starts) re-enqueues runs whose owner is gone, in case
the dead worker's message was dropped as a duplicate earlier.

Cancel. ``run_cancel`` sets ``cancelling`` (a queued run goes straight to ``cancelled``) and raises a
Redis flag; the trainer polls it after every optimiser step, so training stops after the step in
flight. The run ends ``cancelled`` with no model version; the checkpoints saved before the cancel
stay under ``MODEL_STORE/runs/<run id>/checkpoint-N`` for inspection (a cancelled run is final and
never resumed), and no ``final`` folder is written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from annotator import events
from annotator.errors import Conflict, InvalidInput, NotFound
from annotator.models import (
    Backend,
    Correction,
    DatasetSnapshot,
    EvalResult,
    MetricPoint,
    ModelVersion,
    Project,
    Prompt,
    RunStatus,
    SnapshotStatus,
    Stage,
    TrainingRun,
)
from annotator.services.audit import audit_record

log = logging.getLogger(__name__)

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
EVAL_DEFAULTS = {"max_prompts": 64, "max_new_tokens": 128}
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING)
TRAIN_TASK = "trainer_worker.train"
AUTOTRAIN_TASK = "trainer_worker.autotrain_check"


# --- paths and queues ----------------------------------------------------------------------------


def run_dir(run_id: int) -> Path:
    return Path(settings.MODEL_STORE) / "runs" / str(run_id)


def _model_path(version: ModelVersion) -> str:
    return version.path or version.base_model


def enqueue_train(run_id: int) -> None:
    # The queue is read from settings at call time, so a test session can point it at its own queue.
    current_app.send_task(TRAIN_TASK, kwargs={"run_id": run_id}, queue=settings.CELERY_TRAIN_QUEUE)


def enqueue_autotrain(project_id: int) -> None:
    current_app.send_task(AUTOTRAIN_TASK, kwargs={"project_id": project_id}, queue=settings.CELERY_TASK_DEFAULT_QUEUE)


# --- Redis signals: cancel flag and heartbeat -----------------------------------------------------


def _cancel_key(run_id: int) -> str:
    return f"{events.key_prefix()}run:{run_id}:cancel"


def _owner_key(run_id: int) -> str:
    return f"{events.key_prefix()}run:{run_id}:owner"


def owner_alive(run_id: int) -> bool:
    return bool(events.redis_client().exists(_owner_key(run_id)))


class Heartbeat:
    """Keeps ``run:<id>:owner`` alive while this process trains; it expires when the process dies."""

    def __init__(self, run_id: int, token: str) -> None:
        self.run_id = run_id
        self.token = token
        self.ttl = max(2, int(settings.TRAIN_HEARTBEAT_S))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def claim(self) -> None:
        events.redis_client().set(_owner_key(self.run_id), self.token, ex=self.ttl)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(Exception):  # a Redis hiccup must not kill the training thread
                events.redis_client().set(_owner_key(self.run_id), self.token, ex=self.ttl)

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            client = events.redis_client()
            if client.get(_owner_key(self.run_id)) == self.token:
                client.delete(_owner_key(self.run_id))


# --- request side ---------------------------------------------------------------------------------


def _stage_config_dict(
    config: dict[str, Any], *, stage: str, base_path: str, output_dir: str, dataset_path: str, kinds: set[str]
) -> dict[str, Any]:
    trainer = {k: v for k, v in config.items() if k != "eval"}
    values: dict[str, Any] = {"logging_steps": 1, **trainer}
    values.update(stage=stage, base_model_path=base_path, output_dir=output_dir, dataset_path=dataset_path)
    if stage == Stage.VERIFIER and "verifier_kind" not in trainer and len(kinds) == 1:
        values["verifier_kind"] = next(iter(kinds)).removeprefix("verifier_")
    return values


def _validate_config(stage: str, config: dict[str, Any], base_path: str, dataset_path: str, kinds: set[str]) -> None:
    from trainer_worker.training.config import ConfigError, StageConfig

    problems: list[str] = []
    given = sorted(k for k in STUDIO_KEYS if k in config)
    if given:
        problems.append(f"the studio sets {', '.join(given)} itself; leave them out of config")
    evaluation = config.get("eval", {})
    if not isinstance(evaluation, dict) or set(evaluation) - set(EVAL_DEFAULTS):
        problems.append(f"config.eval must be an object with some of: {', '.join(EVAL_DEFAULTS)}")
    if stage == Stage.VERIFIER and "verifier_kind" in config and kinds != {f"verifier_{config['verifier_kind']}"}:
        problems.append(f"verifier_kind {config['verifier_kind']!r} does not match the snapshot kinds {sorted(kinds)}")
    if not problems:
        values = _stage_config_dict(
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
    from annotator.services.snapshots import snapshot_file

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
    _validate_config(stage, config, _model_path(base_model), dataset_path, kinds)

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
    transaction.on_commit(partial(enqueue_train, run.pk))
    return run


def _publish_progress(run_id: int) -> None:
    row = TrainingRun.objects.filter(pk=run_id).values("progress", "status", "error", "output_model_id").first()
    if row is not None:
        events.publish_run_event(
            run_id, "run.progress", progress=row["progress"], status=row["status"], error=row["error"],
            output_model=row["output_model_id"],
        )


@transaction.atomic
def run_cancel(*, run: TrainingRun, actor: Any) -> TrainingRun:
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
    transaction.on_commit(lambda: events.redis_client().set(_cancel_key(locked.pk), "1", ex=7 * 24 * 3600))
    transaction.on_commit(partial(_publish_progress, locked.pk))
    return locked


@transaction.atomic
def model_promote(*, version: ModelVersion, actor: Any) -> Project:
    """Make ``version`` the project's serving model. The next trace generates with it: the local
    backend caches models by path and every run writes a new path; a vLLM LoRA version is loaded
    into the server here, before the switch, so a failure leaves the old model serving."""
    project = Project.objects.select_for_update().get(pk=version.project_id)
    previous = project.serving_model_id
    if version.backend == Backend.VLLM and version.adapter_path:
        from annotator.generation.backends import GenerationError
        from annotator.services.generation import backend_for

        try:
            backend_for(version).load_lora_adapter(version.backend_options.get("served_name") or version.name,
                                                   version.adapter_path)
        except GenerationError as exc:
            if "already been loaded" not in str(exc):  # promoted before: the server still has it
                raise Conflict(f"The vLLM server did not load the adapter: {exc}", code="backend_error") from exc
    project.serving_model = version
    project.save(update_fields=["serving_model"])
    audit_record(project=project, actor=actor, action="model_version.promoted", target=version,
                 data={"previous": previous, "name": version.name})
    return project


# --- worker side ----------------------------------------------------------------------------------


def _claim(run_id: int, worker: str) -> tuple[TrainingRun, Heartbeat, bool] | None:
    """Take ownership of the run, or None when this delivery must do nothing."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in TERMINAL:
            return None
        resumed = False
        if run.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
            if owner_alive(run_id):
                log.info("run %s is being trained by %s; dropping the duplicate delivery", run_id, run.worker)
                return None
            if run.status == RunStatus.CANCELLING:
                # Its worker died while stopping: the user asked to stop, so stopped it is.
                run.status = RunStatus.CANCELLED
                run.finished_at = timezone.now()
                run.save(update_fields=["status", "finished_at"])
                transaction.on_commit(partial(_publish_progress, run_id))
                return None
            resumed = True
            run.log += f"Worker {run.worker or '?'} was lost; {worker} resumes from the last checkpoint.\n"
        heartbeat = Heartbeat(run_id, f"{worker}:{uuid.uuid4().hex}")
        heartbeat.claim()  # before the commit: a second delivery waiting on the lock sees a live owner
        run.status = RunStatus.RUNNING
        run.worker = worker
        run.started_at = run.started_at or timezone.now()
        run.save(update_fields=["status", "worker", "started_at", "log"])
        transaction.on_commit(partial(_publish_progress, run_id))
    return run, heartbeat.start(), resumed


def _dataset_path(run: TrainingRun, folder: Path) -> str:
    from annotator.services.snapshots import snapshot_file

    snapshots = list(run.snapshots.order_by("id"))
    paths = [snapshot_file(s, "parquet")[0] for s in snapshots]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"snapshot files missing: {', '.join(missing)}")
    if len(paths) == 1:
        return str(paths[0])
    import pyarrow as pa
    import pyarrow.parquet as pq

    combined = folder / "dataset.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default"), combined)
    return str(combined)


class _Reporter:
    """The trainer's callbacks: metrics rows, progress, log lines, and the cancel check."""

    CANCEL_DB_CHECK_S = 2.0  # the Redis flag answers each step; the database is re-read now and then

    def __init__(self, run_id: int, max_steps: int) -> None:
        self.run_id = run_id
        self.max_steps = max_steps
        self._last_db_check = 0.0

    def on_metrics(self, step: int, values: dict[str, float]) -> None:
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=self.run_id, step=step, name=name, value=value) for name, value in values.items()],
            ignore_conflicts=True,  # a resumed run logs some steps again
        )
        if self.max_steps > 0:
            # update() of one column: never a full-row save that could undo a concurrent cancel.
            TrainingRun.objects.filter(pk=self.run_id).update(progress=min(1.0, step / self.max_steps))
        events.publish_run_event(self.run_id, "run.metrics", step=step, metrics=values)
        _publish_progress(self.run_id)

    def on_log(self, line: str) -> None:
        TrainingRun.objects.filter(pk=self.run_id).update(log=Concat(F("log"), Value(line + "\n")))
        events.publish_run_event(self.run_id, "run.log", line=line)

    def should_stop(self) -> bool:
        if events.redis_client().exists(_cancel_key(self.run_id)):
            return True
        now = time.monotonic()
        if now - self._last_db_check < self.CANCEL_DB_CHECK_S:
            return False
        self._last_db_check = now
        status = TrainingRun.objects.filter(pk=self.run_id).values_list("status", flat=True).first()
        return status != RunStatus.RUNNING


def _finish(run_id: int, *, status: str, error: str = "", **fields: Any) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.status = status
        run.error = error[:4000]
        run.finished_at = timezone.now()
        if status == RunStatus.SUCCEEDED:
            run.progress = 1.0
        for key, value in fields.items():
            setattr(run, key, value)
        run.save(update_fields=["status", "error", "finished_at", "progress", *fields])
        audit_record(project=run.project, actor=None, action=f"training_run.{status}", target=run,
                     data={"error": run.error} if error else {"output_model": run.output_model_id})
        transaction.on_commit(partial(_publish_progress, run_id))


def _merge_adapter(adapter: Path, out: Path) -> Path:
    """A full checkpoint of base + adapter, for the local backend (it loads full checkpoints only)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if not (out / "config.json").exists():
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).merge_and_unload()
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    return out


def _register(run_id: int, final: Path, lora: bool) -> ModelVersion | None:
    """The run's model version, created once (under the run's lock, checked by ``produced_by``)."""
    run = TrainingRun.objects.select_related("base_model").get(pk=run_id)
    base = run.base_model
    merged = None
    if lora and base.backend == Backend.LOCAL:
        merged = _merge_adapter(final, run_dir(run_id) / "merged")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("base_model", "project").get(pk=run_id)
        existing = ModelVersion.objects.filter(produced_by=run).first()
        if existing is not None:
            return existing
        if run.status != RunStatus.RUNNING:
            return None  # cancelled after the last step: the finished folder stays unregistered
        fields: dict[str, Any] = {"base_model": str(final), "path": str(final)}
        if lora:
            fields = {"base_model": base.base_model if base.backend == Backend.VLLM else _model_path(base),
                      "path": str(merged or ""), "adapter_path": str(final)}
        version = ModelVersion.objects.create(
            project=run.project, name=f"{base.name}-{run.stage}-run{run.pk}", backend=base.backend,
            backend_options=dict(base.backend_options) if base.backend == Backend.VLLM else {},
            parent=base, produced_by=run, notes=f"Trained by run {run.pk} ({run.stage}).", **fields,
        )
        run.output_model = version
        run.save(update_fields=["output_model"])
        audit_record(project=run.project, actor=None, action="model_version.created", target=version,
                     data={"name": version.name, "produced_by": run.pk, "parent": base.pk})
    return version


def heldout_prompts(project: Project, limit: int) -> list[dict[str, Any]]:
    """The project's held-out prompts as evaluate_model takes them.

    Held out: ``metadata.split`` is "heldout" (or "eval"/"test"), or, for prompts of the demo task,
    the task's own split of the prompt text says so. Other prompts may be in the training data.
    """
    from trainer_worker.training import demo_task

    out: list[dict[str, Any]] = []
    if limit <= 0:
        return out
    for prompt in Prompt.objects.filter(project=project).order_by("id").iterator():
        if prompt.images.exists():
            continue  # the evaluation generates text-only
        text = "\n".join(m["content"] for m in prompt.messages if m.get("role") == "user"
                         and isinstance(m.get("content"), str))
        split = (prompt.metadata or {}).get("split")
        if split is None:
            try:
                demo_task.solve(text)
            except ValueError:
                continue
            split = demo_task.split_of(text)
        if split not in ("heldout", "eval", "test"):
            continue
        out.append({"prompt": prompt.messages, "reference": prompt.reference_answer or None,
                    "category": prompt.category, "text": text})
        if len(out) >= limit:
            break
    return out


def _check_answer(prompts: list[dict[str, Any]]) -> Callable[[Any, str | None], bool]:
    """The demo task's checker for its prompts; the reference rule check for the others."""
    from trainer_worker.training import demo_task
    from trainer_worker.training.rewards import answer_matches

    by_key = {repr(p["prompt"]): p for p in prompts}

    def check(prompt: Any, answer: str | None) -> bool:
        item = by_key[repr(prompt)]
        try:
            return demo_task.check_answer(item["text"], answer)
        except ValueError:
            return item["reference"] is not None and answer_matches(answer, item["reference"])

    return check


def run_evaluate(*, run_id: int, version: ModelVersion, model_path: str) -> list[EvalResult]:
    from trainer_worker.training import demo_task
    from trainer_worker.training.evaluate import evaluate_model

    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    options = {**EVAL_DEFAULTS, **(run.config.get("eval") or {})}
    prompts = heldout_prompts(run.project, int(options["max_prompts"]))
    if not prompts:
        return []
    for item in prompts:
        # evaluate_model counts a "knowledge" prompt as verifiable when a checker is given; one with
        # neither a reference nor a demo-task solution cannot be checked, so it is not counted.
        try:
            demo_task.solve(item["text"])
        except ValueError:
            if item["reference"] is None and item["category"] == "knowledge":
                item["category"] = "general"
    scores = evaluate_model(model_path, prompts, max_new_tokens=int(options["max_new_tokens"]),
                            check_answer=_check_answer(prompts))
    rows = []
    details = {"n": scores["n"], "n_verifiable": scores["n_verifiable"], "n_safety": scores["n_safety"]}
    for metric in ("accuracy", "safety_score", "mean_cot_tokens", "format_rate"):
        if scores.get(metric) is None:
            continue
        row, _ = EvalResult.objects.update_or_create(
            model_version=version, run_id=run_id, metric=metric,
            defaults={"value": float(scores[metric]), "details": details},
        )
        rows.append(row)
    return rows


def run_execute(*, run_id: int, worker: str) -> str | None:
    """Train one run (the body of the train task). Returns the final status, or None when this
    delivery did nothing (a duplicate, or a run that is already over)."""
    from trainer_worker.training.config import StageConfig
    from trainer_worker.training.runner import run_stage

    claimed = _claim(run_id, worker)
    if claimed is None:
        return None
    run, heartbeat, resumed = claimed
    reporter = _Reporter(run_id, int(run.config.get("max_steps", -1)))
    try:
        folder = run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        kinds = set(run.snapshots.values_list("kind", flat=True))
        values = _stage_config_dict(
            run.config, stage=run.stage, base_path=_model_path(run.base_model), output_dir=str(folder),
            dataset_path=_dataset_path(run, folder), kinds=kinds,
        )
        config = StageConfig.from_dict(values)
        result = run_stage(config, on_metrics=reporter.on_metrics, on_log=reporter.on_log,
                           should_stop=reporter.should_stop, resume=True)
        if result.cancelled:
            _finish(run_id, status=RunStatus.CANCELLED)
            return RunStatus.CANCELLED
        reporter.on_log(f"Trained {result.global_step} steps, {result.train_tokens} tokens in "
                        f"{result.train_seconds:.2f} s" + (" (resumed)" if resumed else ""))
        version = _register(run_id, Path(result.output_path), lora=config.lora is not None)
        if version is None:
            _finish(run_id, status=RunStatus.CANCELLED)
            return RunStatus.CANCELLED
        if run.stage in GENERATIVE:
            try:
                rows = run_evaluate(run_id=run_id, version=version, model_path=str(result.output_path))
                reporter.on_log("Evaluated: " + ", ".join(f"{r.metric}={r.value:.3g}" for r in rows)
                                if rows else "No held-out prompts to evaluate on.")
            except Exception as exc:  # the model is trained and registered; a broken eval is reported
                log.exception("evaluation of run %s failed", run_id)
                reporter.on_log(f"Evaluation failed: {type(exc).__name__}: {exc}")
        _finish(run_id, status=RunStatus.SUCCEEDED)
        return RunStatus.SUCCEEDED
    except Exception as exc:
        log.exception("run %s failed", run_id)
        _finish(run_id, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return RunStatus.FAILED
    finally:
        heartbeat.release()
        with contextlib.suppress(Exception):
            events.redis_client().delete(_cancel_key(run_id))


def runs_recover() -> list[int]:
    """At train-worker start: re-enqueue runs whose owner is gone (running without a heartbeat).
    The delivery then resumes them; a duplicate is dropped by the claim. Returns their ids."""
    ids = [
        pk for pk in TrainingRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.CANCELLING])
        .values_list("pk", flat=True) if not owner_alive(pk)
    ]
    for pk in ids:
        enqueue_train(pk)
    return ids


# --- auto-train ---------------------------------------------------------------------------------

POLICY_KEYS = {"enabled", "every_n_corrections", "stage", "snapshot_kind", "config", "base_model", "filters"}


def correction_added(branch: Any) -> None:
    """Hook (after a correction commits): let the policy task look at the project."""
    policy = Project.objects.filter(pk=branch.project_id).values_list("autotrain_policy", flat=True).first()
    if policy and policy.get("enabled"):
        enqueue_autotrain(branch.project_id)


def autotrain_check(*, project_id: int) -> TrainingRun | None:
    """Start an automatic run when N corrections arrived since the last automatic run's start.

    The project row is locked for the check, so two checks never both start one; no automatic run
    starts while another of the project is queued or running. The snapshot is built right here (in
    the policy task) so the run is created with a ready snapshot.
    """
    from annotator.services.snapshots import snapshot_build, snapshot_create

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
