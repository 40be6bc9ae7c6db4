"""Dataset snapshots: a frozen, content-hashed export of one kind with one filter.

``snapshot_create`` validates and records the request, then enqueues the build on commit (ids
only). ``snapshot_build`` (run by the Celery task ``annotator.build_snapshot``) streams the corpus from
the database in chunks (``CorpusStream``) through materialisation into ``write_snapshot``, which
writes ``data.jsonl``, ``data.parquet``, the per-split ``data.{train,eval}.jsonl`` / ``.parquet``
and ``dataset.zip`` in one pass, and marks the snapshot ready; memory holds a chunk, not the
corpus. Every record has a ``split`` key ("train" / "eval"); ``sha256`` is the canonical hash of
the records of ``data.jsonl``, that key included, and also the sha256 of the file itself (its
lines are the records' canonical JSON). A
ready snapshot is never written again; new labels show up in a new snapshot with a new hash.

Files live under ``settings.EXPORT_ROOT/<project id>/<snapshot id>/``. A build writes into a
private temporary folder next to it and renames it into place while holding the row lock, so a
duplicated delivery of the task (late acks) can never leave a half-written or mixed snapshot.

A snapshot never stays ``building``: the build holds a heartbeat (``flags.SnapshotHeartbeat``) and
any error in it ends the snapshot ``failed`` with its reason in ``error``; ``SnapshotSweep`` (run
by the sweep loop of lost generations, ``annotator.services.sweeps.sweep_forever``) ends one whose worker
died.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from annotator import flags
from annotator.datasets.corpus import CorpusFilter, CorpusStream
from annotator.datasets.materialise import KINDS, materialise_chunks
from annotator.datasets.writers import SPLITS, write_snapshot
from annotator.enqueue import BUILD_SNAPSHOT, enqueue_on_commit
from annotator.errors import InvalidInput
from annotator.models import DatasetSnapshot, Project, SnapshotStatus
from annotator.services.audit import audit_record
from annotator.sweep import HeartbeatSweep

log = logging.getLogger(__name__)

# format → (file name in the snapshot folder, download suffix, content type)
FORMATS: dict[str, tuple[str, str, str]] = {
    "jsonl": ("data.jsonl", ".jsonl", "application/jsonl"),
    "parquet": ("data.parquet", ".parquet", "application/vnd.apache.parquet"),
    "hf": ("dataset.zip", ".zip", "application/zip"),
}
# Formats that also have one file per split (``data.train.jsonl``, ``data.eval.parquet``, ...): the
# hf zip already holds each split as its own file.
SPLIT_FORMATS = ("jsonl", "parquet")


def snapshot_dir(snapshot: DatasetSnapshot) -> Path:
    return Path(settings.EXPORT_ROOT) / str(snapshot.project_id) / str(snapshot.pk)


def snapshot_dataset_name(snapshot: DatasetSnapshot) -> str:
    """Folder name inside the zip and stem of download file names, e.g. ``arithmetic-safety-sft-12``."""
    base = slugify(snapshot.name or snapshot.project.name)[:80] or "dataset"
    return f"{base}-{snapshot.kind}-{snapshot.pk}"


def _split_name(name: str, split: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{split}{dot}{ext}"


def snapshot_file(snapshot: DatasetSnapshot, fmt: str, split: str | None = None) -> tuple[Path, str, str]:
    """(path, download file name, content type) of a ready snapshot's file in ``fmt``: all records,
    or with ``split`` ("train" / "eval") the file of that split only (jsonl and parquet)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}.", code="bad_format")
    if split is not None:
        if split not in SPLITS:
            raise InvalidInput(f"split must be one of {', '.join(SPLITS)} (or absent for all).", code="bad_split")
        if fmt not in SPLIT_FORMATS:
            raise InvalidInput(
                f"split applies to {' and '.join(SPLIT_FORMATS)}; the {fmt} file holds every split.", code="bad_split"
            )
    name, suffix, content_type = FORMATS[fmt]
    stem = snapshot_dataset_name(snapshot)
    if split is None:
        return snapshot_dir(snapshot) / name, stem + suffix, content_type
    return snapshot_dir(snapshot) / _split_name(name, split), f"{stem}-{split}{suffix}", content_type


@transaction.atomic
def snapshot_create(
    *,
    project: Project,
    actor: Any,
    kind: Any,
    filters: Any = None,
    name: Any = "",
    seed: Any = 0,
    eval_fraction: Any = 0.1,
) -> DatasetSnapshot:
    if kind not in KINDS:
        raise InvalidInput(f"Unknown dataset kind {kind!r}. Known: {', '.join(KINDS)}.", code="bad_kind")
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("name must be a string of at most 200 characters.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**31) <= seed < 2**31:
        raise InvalidInput("seed must be a 32-bit integer.")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, int | float) or not 0 <= eval_fraction < 1:
        raise InvalidInput("eval_fraction must be a number from 0 (no eval split) up to, not including, 1.")
    corpus_filter = CorpusFilter.from_json(filters)
    corpus_filter.check_against(project)
    snapshot = DatasetSnapshot.objects.create(
        project=project,
        name=name.strip(),
        kind=kind,
        filters=corpus_filter.as_json(),
        seed=seed,
        eval_fraction=float(eval_fraction),
        created_by=actor,
    )
    audit_record(
        project=project,
        actor=actor,
        action="dataset_snapshot.created",
        target=snapshot,
        data={"kind": kind, "filters": snapshot.filters, "seed": seed, "eval_fraction": snapshot.eval_fraction},
    )
    enqueue_on_commit(BUILD_SNAPSHOT, snapshot_id=snapshot.pk)
    return snapshot


def _write_files(snapshot: DatasetSnapshot, folder: Path) -> dict[str, Any]:
    corpus_filter = CorpusFilter.from_json(snapshot.filters)
    # The corpus streams from the database in chunks through materialisation into the writers,
    # which write every file in one pass: memory holds a chunk, not the corpus.
    stream = CorpusStream(snapshot.project, kind=snapshot.kind, filters=corpus_filter)
    images = stream.has_images() if corpus_filter.images is None else corpus_filter.images
    records = materialise_chunks(snapshot.kind, stream, images=images, redundant_steps=corpus_filter.redundant_steps)
    info = write_snapshot(
        records,
        jsonl=folder / FORMATS["jsonl"][0],
        parquet=folder / FORMATS["parquet"][0],
        split_jsonl={s: folder / _split_name(FORMATS["jsonl"][0], s) for s in SPLITS},
        split_parquet={s: folder / _split_name(FORMATS["parquet"][0], s) for s in SPLITS},
        hf_zip=folder / FORMATS["hf"][0],
        kind=snapshot.kind,
        name=snapshot_dataset_name(snapshot),
        seed=snapshot.seed,
        eval_fraction=snapshot.eval_fraction,
        provenance={"project": snapshot.project_id, "snapshot": snapshot.pk, "filters": snapshot.filters},
    )
    files: dict[str, Any] = {
        fmt: {"name": name, "bytes": (folder / name).stat().st_size} for fmt, (name, _, _) in FORMATS.items()
    }
    for fmt in SPLIT_FORMATS:
        files[fmt]["splits"] = {
            split: {"name": n, "bytes": (folder / n).stat().st_size}
            for split in SPLITS
            for n in [_split_name(FORMATS[fmt][0], split)]
        }
    return {
        "sha256": info["sha256"],
        "record_count": info["count"],
        "counts": {"train": 0, "eval": 0, **info["splits"]},
        "files": files,
    }


_gc_lock = threading.Lock()
_gc_state: dict[str, Any] = {"depth": 0, "thresholds": ()}


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the objects that existed before the build.

    A build makes millions of short-lived, acyclic objects (rows, records, JSON strings); each
    collection of the oldest generation would walk every object of the process too (Django, pyarrow,
    datasets: hundreds of thousands), which cost a third of the build's CPU in bench/snapshot_scale.py.
    ``gc.freeze()`` sets those aside until the build ends (``gc.unfreeze()`` gives them back to
    the collector), and a higher first threshold makes young collections rarer. Collections still
    run, so memory stays bounded. Nested or concurrent builds in one process share one pause."""
    with _gc_lock:
        _gc_state["depth"] += 1
        if _gc_state["depth"] == 1:
            _gc_state["thresholds"] = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(50_000, *_gc_state["thresholds"][1:])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["depth"] -= 1
            if _gc_state["depth"] == 0:
                gc.set_threshold(*_gc_state["thresholds"])
                gc.unfreeze()


def _claim(snapshot_id: int, owner: str) -> tuple[DatasetSnapshot, flags.SnapshotHeartbeat] | DatasetSnapshot | None:
    """Take the build of a snapshot: (snapshot, started heartbeat), or the snapshot (or None) when
    there is nothing to build. A pending snapshot is taken; so is a ``building`` one whose builder's
    heartbeat is gone (its worker died and the task came back); one with a live builder is not."""
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.select_for_update().select_related("project").filter(pk=snapshot_id).first()
        if snapshot is None or snapshot.status not in (SnapshotStatus.PENDING, SnapshotStatus.BUILDING):
            return snapshot
        if snapshot.status == SnapshotStatus.BUILDING and flags.snapshot_owners_alive([snapshot_id])[snapshot_id]:
            return snapshot  # another delivery is building it now
        heartbeat = flags.SnapshotHeartbeat(snapshot_id, owner, ttl_s=settings.SNAPSHOT_HEARTBEAT_S)
        heartbeat.claim()  # before the commit: the sweep never sees this snapshot building without an owner
        snapshot.status = SnapshotStatus.BUILDING
        snapshot.save(update_fields=["status"])
    return snapshot, heartbeat.start()


def snapshot_build(*, snapshot_id: int, owner: str = "") -> DatasetSnapshot | None:
    """Build a pending snapshot's files. Idempotent: a snapshot that is ready or failed (or gone),
    or that a live process is building, is returned untouched, so a redelivered task does nothing.

    Every snapshot this claims ends ``ready`` or ``failed``: any error on the way (the corpus, the
    disk, the database, a bug) fails it with its reason in ``error``. A heartbeat says this process
    still builds it; if the process dies, the sweep (``SnapshotSweep``) ends it ``failed``."""
    claimed = _claim(snapshot_id, f"{owner or 'worker'}:{uuid.uuid4().hex}")
    if not isinstance(claimed, tuple):
        return claimed
    snapshot, heartbeat = claimed
    work: Path | None = None
    try:
        final = snapshot_dir(snapshot)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".building-{snapshot.pk}-", dir=final.parent))
        with _collector_paused():
            result = _write_files(snapshot, work)
        return _finish(snapshot.pk, status=SnapshotStatus.READY, work=work, **result)
    except Exception as exc:
        log.exception("snapshot %s failed", snapshot.pk)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        return _fail(snapshot.pk, f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.release()


def _fail(snapshot_id: int, error: str) -> DatasetSnapshot | None:
    """End a snapshot ``failed`` with ``error``. If even this cannot reach the database, the released
    heartbeat lets the sweep end it once the database is back."""
    try:
        return _finish(snapshot_id, status=SnapshotStatus.FAILED, error=error[:2000])
    except Exception:
        log.exception("could not record the failure of snapshot %s", snapshot_id)
        return None


def _finish(snapshot_id: int, *, status: str, work: Path | None = None, **fields: Any) -> DatasetSnapshot | None:
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.select_for_update().select_related("project").filter(pk=snapshot_id).first()
        if snapshot is None or snapshot.status != SnapshotStatus.BUILDING:
            # Another delivery finished first (or the snapshot was deleted): its files stand.
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            return snapshot
        if work is not None:
            final = snapshot_dir(snapshot)
            shutil.rmtree(final, ignore_errors=True)  # leftovers of a crashed earlier attempt
            os.replace(work, final)
        for key, value in fields.items():
            setattr(snapshot, key, value)
        snapshot.status = status
        snapshot.finished_at = timezone.now()
        snapshot.save(update_fields=["status", "finished_at", *fields])
        audit_record(
            project=snapshot.project,
            actor=None,
            action=f"dataset_snapshot.{status}",
            target=snapshot,
            data={k: fields[k] for k in ("sha256", "record_count", "counts", "error") if k in fields},
        )
        if status == SnapshotStatus.READY:
            from annotator.services.webhooks import webhook_emit

            webhook_emit(project=snapshot.project, event_type="snapshot.ready", data={
                "snapshot": snapshot.pk, "kind": snapshot.kind, "record_count": snapshot.record_count,
                "sha256": snapshot.sha256, "counts": snapshot.counts})
    return snapshot


# --- lost builds ----------------------------------------------------------------------------------

LOST_ERROR = "The worker building this snapshot was lost (its heartbeat stopped); create the snapshot again."


class SnapshotSweep(HeartbeatSweep):
    """Ends snapshots whose building process is gone: ``building`` with no heartbeat, as ``failed``.

    The same grace logic as ``annotator.services.generation.TraceSweep``: a snapshot is ended only
    after its heartbeat has been missing for ``grace_s`` on checks this sweep made itself (a key
    Redis lost comes back within a third of its lifetime). Idempotent and safe to run in several
    processes: each snapshot is re-read under its row lock and ended once. Its half-written folder
    (``.building-<id>-*``) is removed; a ready snapshot's files are never touched."""

    def __init__(self, *, grace_s: float) -> None:
        super().__init__(
            grace_s=grace_s,
            in_flight=lambda: DatasetSnapshot.objects.filter(status=SnapshotStatus.BUILDING).values_list(
                "pk", flat=True),
            alive=flags.snapshot_owners_alive,
            end=_end_lost,
        )


def _end_lost(snapshot_id: int) -> bool:
    with transaction.atomic():
        snapshot = (
            DatasetSnapshot.objects.select_for_update()
            .select_related("project")
            .filter(pk=snapshot_id, status=SnapshotStatus.BUILDING)
            .first()
        )
        if snapshot is None or flags.snapshot_owners_alive([snapshot_id])[snapshot_id]:
            return False
        snapshot.status, snapshot.error, snapshot.finished_at = SnapshotStatus.FAILED, LOST_ERROR, timezone.now()
        snapshot.save(update_fields=["status", "error", "finished_at"])
        audit_record(
            project=snapshot.project,
            actor=None,
            action="dataset_snapshot.failed",
            target=snapshot,
            data={"error": LOST_ERROR},
        )
        folder = snapshot_dir(snapshot)
    for leftover in folder.parent.glob(f".building-{snapshot_id}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    log.warning("snapshot %s: its building worker was lost; ended failed", snapshot_id)
    return True
