"""Training runs, the train worker's side: claim, heartbeat, report, register, evaluate.

``run_execute`` is what the train task calls. It claims the run under a row lock, trains through
``trainer_worker.training.launch.train`` with a reporter as its callbacks (``run_stage`` in this
process, or under ``accelerate launch`` when the run asks for more than one process: rank 0 reports
through this process, which alone touches the database), registers the model version and
evaluates it on the project's held-out prompts.

Ownership and redelivery. Tasks are late-acked: a worker that dies leaves its message unacked and
Redis hands it out again after the visibility timeout. A claimed run carries a heartbeat
(``flags.Heartbeat``), a Redis key with a short expiry that a thread of the owning process renews
while it trains. A delivery for a run that is running with a live heartbeat is a duplicate (a
healthy run outlasted the visibility timeout) and is dropped; one whose heartbeat has expired finds
a dead owner and resumes from the last checkpoint in the run's own output folder
(``MODEL_STORE/runs/<run id>/``). A run that already succeeded, failed or was cancelled is never
trained again, and the model version is registered under the run's row lock with ``produced_by``
checked first, so a redelivery cannot create a second one. ``runs_recover`` (called when a train
worker starts) re-enqueues runs whose owner is gone, in case the dead worker's message was dropped
as a duplicate earlier.

Cancel. The run ends ``cancelled`` with no model version; the checkpoints saved before the cancel
stay under ``MODEL_STORE/runs/<run id>/checkpoint-N`` for inspection (a cancelled run is final and
never resumed), and no ``final`` folder is written.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from annotator import events, flags
from annotator.enqueue import TRAIN, enqueue
from annotator.models import Backend, EvalResult, MetricPoint, ModelVersion, Project, Prompt, RunStatus, TrainingRun
from annotator.services.audit import audit_record
from annotator.services.snapshots import snapshot_file
from annotator.services.training.runs import (
    EVAL_DEFAULTS,
    GENERATIVE,
    TERMINAL,
    model_path,
    publish_progress,
    run_dir,
    stage_config_dict,
)
from trainer_worker.training import heldout
from trainer_worker.training.artifacts import concat_parquet, merge_adapter
from trainer_worker.training.config import StageConfig

log = logging.getLogger(__name__)


def _claim(run_id: int, worker: str) -> tuple[TrainingRun, flags.Heartbeat, bool] | None:
    """Take ownership of the run, or None when this delivery must do nothing."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in TERMINAL:
            return None
        resumed = False
        if run.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
            if flags.owner_alive(run_id):
                log.info("run %s is being trained by %s; dropping the duplicate delivery", run_id, run.worker)
                return None
            if run.status == RunStatus.CANCELLING:
                # Its worker died while stopping: the user asked to stop, so stopped it is.
                run.status = RunStatus.CANCELLED
                run.finished_at = timezone.now()
                run.save(update_fields=["status", "finished_at"])
                transaction.on_commit(partial(publish_progress, run_id))
                return None
            resumed = True
            run.log += f"Worker {run.worker or '?'} was lost; {worker} resumes from the last checkpoint.\n"
        heartbeat = flags.Heartbeat(run_id, f"{worker}:{uuid.uuid4().hex}", ttl_s=settings.TRAIN_HEARTBEAT_S)
        heartbeat.claim()  # before the commit: a second delivery waiting on the lock sees a live owner
        run.status = RunStatus.RUNNING
        run.worker = worker
        run.started_at = run.started_at or timezone.now()
        run.save(update_fields=["status", "worker", "started_at", "log"])
        transaction.on_commit(partial(publish_progress, run_id))
    return run, heartbeat.start(), resumed


def _dataset_path(run: TrainingRun, folder: Path) -> str:
    """The run's training data: the train split of its snapshots' Parquet files, as one file. The
    eval split is never trained on; a snapshot built before splits were written has no split
    file, and its whole file is used (as it always was)."""
    paths = []
    for snapshot in run.snapshots.order_by("id"):
        train = snapshot_file(snapshot, "parquet", split="train")[0]
        paths.append(train if train.exists() else snapshot_file(snapshot, "parquet")[0])
    return str(concat_parquet(paths, folder / "dataset.parquet"))


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
        publish_progress(self.run_id)

    def on_log(self, line: str) -> None:
        TrainingRun.objects.filter(pk=self.run_id).update(log=Concat(F("log"), Value(line + "\n")))
        events.publish_run_event(self.run_id, "run.log", line=line)

    def should_stop(self) -> bool:
        if flags.cancel_requested(self.run_id):
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
        transaction.on_commit(partial(publish_progress, run_id))


def _register(run_id: int, final: Path, lora: bool) -> ModelVersion | None:
    """The run's model version, created once (under the run's lock, checked by ``produced_by``)."""
    run = TrainingRun.objects.select_related("base_model").get(pk=run_id)
    base = run.base_model
    merged = None
    if lora and base.backend == Backend.LOCAL:
        merged = merge_adapter(final, run_dir(run_id) / "merged")  # minutes of work: before the lock
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("base_model", "project").get(pk=run_id)
        existing = ModelVersion.objects.filter(produced_by=run).first()
        if existing is not None:
            return existing
        if run.status != RunStatus.RUNNING:
            return None  # cancelled after the last step: the finished folder stays unregistered
        fields: dict[str, Any] = {"base_model": str(final), "path": str(final)}
        if lora:
            fields = {"base_model": base.base_model if base.backend == Backend.VLLM else model_path(base),
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
    """The project's held-out text prompts as evaluation items (``trainer_worker.training.heldout``)."""
    out: list[dict[str, Any]] = []
    if limit <= 0:
        return out
    for prompt in Prompt.objects.filter(project=project, images__isnull=True).order_by("id").iterator():
        item = heldout.heldout_item(prompt.messages, metadata=prompt.metadata, reference=prompt.reference_answer,
                                    category=prompt.category)
        if item is not None:
            out.append(item)
            if len(out) >= limit:
                break
    return out


# Per-class rows: "<class>.<metric>" (e.g. "planted.accuracy"), beside the overall ones.
CLASS_METRICS = ("accuracy", "refusal_rate", "mean_cot_tokens", "n")


def _eval_rows(version: ModelVersion, run_id: int | None, scores: dict[str, Any], *,
               guide: dict[str, Any] | None = None) -> list[EvalResult]:
    """One row per figure. A guided evaluation's rows are named ``guided.<metric>`` (e.g.
    ``guided.accuracy``, ``guided.planted.accuracy``) and say their guide in ``details``, so the
    unguided figures keep their names and both stand side by side."""
    details: dict[str, Any] = {"n": scores["n"], "n_verifiable": scores["n_verifiable"],
                               "n_safety": scores["n_safety"]}
    values: dict[str, float] = {m: float(scores[m]) for m in ("accuracy", "safety_score", "mean_cot_tokens",
                                                             "format_rate") if scores.get(m) is not None}
    for klass, row in (scores.get("classes") or {}).items():
        values.update({f"{klass}.{m}": float(row[m]) for m in CLASS_METRICS if row.get(m) is not None})
    if guide is not None:
        details["guide"] = {**guide, "temperature": GUIDED_EVAL_TEMPERATURE}
        values = {f"{GUIDED_PREFIX}{metric}": value for metric, value in values.items()}
    rows = []
    with transaction.atomic():  # all of one evaluation's figures, or none
        for metric, value in values.items():
            row, _ = EvalResult.objects.update_or_create(
                model_version=version, run_id=run_id, metric=metric, defaults={"value": value, "details": details},
            )
            rows.append(row)
    return rows


GUIDED_PREFIX = "guided."
GUIDED_EVAL_TEMPERATURE = 1.0  # candidates come from the model's own distribution


def guided_completions(project: Project, model_path_: str, items: list[dict[str, Any]], *, guide: dict[str, Any],
                       max_new_tokens: int, seed: int = 0) -> list[str]:
    """Each item's completion by guided generation (annotator/generation/guided.py): best of
    ``guide["k"]`` candidates per step by ``guide["by"]``, item i seeded ``seed + i``."""
    from annotator import supervision
    from annotator.generation import guided
    from annotator.generation.backends import GenerationRequest, SamplingParams
    from annotator.generation.factory import make_backend

    checked = supervision.guide_check(guide, project_id=project.pk)
    backend = make_backend("local", model_path=model_path_)
    params = SamplingParams(temperature=GUIDED_EVAL_TEMPERATURE, max_new_tokens=max_new_tokens)
    out = []
    try:
        for i, item in enumerate(items):
            result = guided.guided_completion(
                backend, GenerationRequest(messages=item["prompt"], params=params), k=checked.k,
                rule=project.step_rule, score=supervision.guide_score_fn(checked.by, item["prompt"]), seed=seed + i,
            )
            out.append(result.completion)
    finally:
        from annotator.generation.local import evict

        evict(model_path_)  # the train worker's memory is for training, not for a warm copy
    return out


def _evaluate(project: Project, options: dict[str, Any], model_path_: str, *,
              guide: dict[str, Any] | None = None) -> dict[str, Any] | None:
    items = heldout_prompts(project, int(options["max_prompts"]))
    if not items:
        return None
    if guide is not None:
        completions = guided_completions(project, model_path_, items, guide=guide,
                                         max_new_tokens=int(options["max_new_tokens"]))
        return heldout.score_heldout(model_path_, items, completions)
    return heldout.evaluate_heldout(model_path_, items, max_new_tokens=int(options["max_new_tokens"]),
                                    batch_size=int(options["batch_size"]))


def _evaluations(version: ModelVersion, run_id: int | None, options: dict[str, Any],
                 model_path_: str) -> list[EvalResult]:
    """The unguided evaluation and, when ``options["guide"]`` names one, the guided one beside it."""
    scores = _evaluate(version.project, options, model_path_)
    if scores is None:
        return []
    rows = _eval_rows(version, run_id, scores)
    guide = options.get("guide")
    if guide:
        guided_scores = _evaluate(version.project, options, model_path_, guide=guide)
        if guided_scores is not None:
            rows += _eval_rows(version, run_id, guided_scores, guide=guide)
    return rows


def run_evaluate(*, run_id: int, version: ModelVersion, model_path: str) -> list[EvalResult]:
    """Evaluate the run's model on the held-out prompts; one EvalResult per metric, overall and per
    class of prompt (``<class>.accuracy`` …); with ``config.eval.guide``, guided too (``guided.…``)."""
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    options = {**EVAL_DEFAULTS, **(run.config.get("eval") or {})}
    return _evaluations(version, run_id, options, model_path)


def version_evaluate(*, version_id: int, options: dict[str, Any] | None = None) -> list[EvalResult]:
    """Evaluate a model version that no run produced (the base model) on the held-out prompts, so
    the dashboard's comparison starts with a point. Rows have no run. ``options["guide"]``
    ({"k", "by"}) adds the guided evaluation."""
    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    return _evaluations(version, None, {**EVAL_DEFAULTS, **(options or {})}, model_path(version))


def run_execute(*, run_id: int, worker: str) -> str | None:
    """Train one run (the body of the train task). Returns the final status, or None when this
    delivery did nothing (a duplicate, or a run that is already over)."""
    from trainer_worker.training.launch import train

    claimed = _claim(run_id, worker)
    if claimed is None:
        return None
    run, heartbeat, resumed = claimed
    reporter = _Reporter(run_id, int(run.config.get("max_steps", -1)))
    try:
        folder = run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        kinds = set(run.snapshots.values_list("kind", flat=True))
        values = stage_config_dict(
            run.config, stage=run.stage, base_path=model_path(run.base_model), output_dir=str(folder),
            dataset_path=_dataset_path(run, folder), kinds=kinds,
        )
        config = StageConfig.from_dict(values)
        # One process here, or several under `accelerate launch` (config.num_processes; see launch).
        result = train(config, on_metrics=reporter.on_metrics, on_log=reporter.on_log,
                       should_stop=reporter.should_stop, resume=True,
                       accelerate_config=settings.ACCELERATE_CONFIG_FILE)
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
            flags.clear_cancel(run_id)


def runs_recover() -> list[int]:
    """At train-worker start: re-enqueue runs whose owner is gone (running without a heartbeat).
    The delivery then resumes them; a duplicate is dropped by the claim. Returns their ids."""
    ids = [
        pk for pk in TrainingRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.CANCELLING])
        .values_list("pk", flat=True) if not flags.owner_alive(pk)
    ]
    for pk in ids:
        enqueue(TRAIN, run_id=pk)
    return ids
