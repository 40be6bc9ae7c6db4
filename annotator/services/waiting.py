"""Work that waits for a worker is never left waiting for ever.

A generation, a set of alternatives, a snapshot build or a training run is created ``queued`` (a
snapshot ``pending``) and its task is sent when the transaction commits. Two things could leave it
there for good, since nothing else would ever look at it again:

- **The message is gone**: the broker lost it (a restart without persistence), or the publish after
  the commit failed (the broker was briefly away). ``WaitingSweep`` (a round of every worker's
  sweep) sends the task again for each item that has waited longer than ``WAITING_RESEND_S``, then
  again after twice that, four times… (at most 64 times ``WAITING_RESEND_S`` apart). A duplicate
  of a message that was only waiting in a long queue costs one claim that finds the item taken.
  Several sweepers send one message between them (a Redis key per item and wait).
- **The task raised before it claimed the item** (the database refused the connection: "too many
  clients"; a table it could not read; a bug). Celery acknowledges a task that raised, so the
  message is gone too. ``start_failed`` (called by the task) retries it with back-off (2, 4, 8 s…,
  at most 30 s), and after ``WORKER_START_ATTEMPTS`` failed attempts ends the item ``failed`` with
  the last error, where the user sees it (the trace's error, the set's, the snapshot's, the run's).
  A queued run is never failed for waiting long (it may wait hours behind other runs), only for
  tasks that raised before its claim.

An item whose workers are all down stays waiting (nothing could run it); the sweep sends its task
again when a worker that sweeps comes back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from annotator import flags
from annotator.enqueue import BUILD_SNAPSHOT, GENERATE_ALTERNATIVES, GENERATE_TRACE, TRAIN, enqueue
from annotator.models import (
    AlternativeSet,
    AlternativesStatus,
    DatasetSnapshot,
    RunStatus,
    SnapshotStatus,
    Trace,
    TraceStatus,
    TrainingRun,
)

log = logging.getLogger(__name__)

MAX_BACKOFF_STEPS = 6  # the sweep's resends end up 64 x WAITING_RESEND_S apart
RETRY_CAP_S = 30.0
PER_ROUND = 1000  # items a sweep round looks at (the longest-waiting first)


@dataclass(frozen=True)
class Kind:
    name: str  # "trace": Redis keys and log lines
    what: str  # "generation": the error text
    model: type[Model]
    status: str  # the waiting status
    since: str  # the field that says since when it waits
    task: str
    id_arg: str
    fail: Callable[[int, str], bool]  # end one waiting item failed (False: it had left its waiting status)


def _fail_trace(trace_id: int, error: str) -> bool:
    from annotator.services.generation import _fail

    return _fail(trace_id, error, statuses=(TraceStatus.QUEUED,))


def _fail_alternatives(set_id: int, error: str) -> bool:
    from annotator.services.alternatives import _announce
    from annotator.services.generation import storable_text

    ended = AlternativeSet.objects.filter(pk=set_id, status=AlternativesStatus.QUEUED).update(
        status=AlternativesStatus.FAILED, error=storable_text(error)[:2000])
    if ended:
        _announce(set_id)
    return bool(ended)


def _fail_snapshot(snapshot_id: int, error: str) -> bool:
    from annotator.services.audit import audit_record

    with transaction.atomic():
        snapshot = (DatasetSnapshot.objects.select_for_update().select_related("project")
                    .filter(pk=snapshot_id, status=SnapshotStatus.PENDING).first())
        if snapshot is None:
            return False
        snapshot.status, snapshot.error, snapshot.finished_at = SnapshotStatus.FAILED, error[:2000], timezone.now()
        snapshot.save(update_fields=["status", "error", "finished_at"])
        audit_record(project=snapshot.project, actor=None, action="dataset_snapshot.failed", target=snapshot,
                     data={"error": snapshot.error})
    return True


def _fail_run(run_id: int, error: str) -> bool:
    from annotator.services.training.worker import _finish

    with transaction.atomic():
        if not TrainingRun.objects.select_for_update().filter(pk=run_id, status=RunStatus.QUEUED).exists():
            return False
        _finish(run_id, status=RunStatus.FAILED, error=error)
    return True


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("trace", "generation", Trace, TraceStatus.QUEUED, "updated_at", GENERATE_TRACE, "trace_id", _fail_trace),
        Kind("alternatives", "sampling of alternatives", AlternativeSet, AlternativesStatus.QUEUED, "created_at",
             GENERATE_ALTERNATIVES, "set_id", _fail_alternatives),
        Kind("snapshot", "snapshot build", DatasetSnapshot, SnapshotStatus.PENDING, "created_at", BUILD_SNAPSHOT,
             "snapshot_id", _fail_snapshot),
        Kind("run", "training run", TrainingRun, RunStatus.QUEUED, "created_at", TRAIN, "run_id", _fail_run),
    )
}


def _key(kind: str, pk: int, what: str) -> str:
    return f"{flags.key_prefix()}waiting:{kind}:{pk}:{what}"


def _resend_due(kind: str, pk: int, base_s: float) -> bool:
    """Whether this sweeper sends the item's task now: the first of the sweepers to ask once its
    wait (base_s, then 2x, 4x ...) is over."""
    r = flags.redis_client()
    sent = int(r.get(_key(kind, pk, "sent")) or 0)
    wait_s = base_s * 2 ** min(sent, MAX_BACKOFF_STEPS)
    if not r.set(_key(kind, pk, "wait"), 1, nx=True, px=max(1, int(wait_s * 1000))):
        return False
    r.set(_key(kind, pk, "sent"), sent + 1, ex=7 * 86400)
    return True


class WaitingSweep:
    """One round: send the task again of every item waiting longer than ``resend_s`` whose wait
    is over (see the module's docstring). Returns {kind: ids sent}."""

    def __init__(self, *, resend_s: float | None = None) -> None:
        self.resend_s = settings.WAITING_RESEND_S if resend_s is None else resend_s

    def run_once(self) -> dict[str, list[int]]:
        cutoff = timezone.now() - timedelta(seconds=self.resend_s)
        sent: dict[str, list[int]] = {}
        for kind in KINDS.values():
            ids = list(kind.model.objects.filter(status=kind.status, **{f"{kind.since}__lt": cutoff})
                       .order_by(kind.since).values_list("pk", flat=True)[:PER_ROUND])
            for pk in ids:
                if _resend_due(kind.name, pk, self.resend_s):
                    enqueue(kind.task, **{kind.id_arg: pk})
                    sent.setdefault(kind.name, []).append(pk)
        for name, ids in sent.items():
            log.warning("sent the task again of %d waiting %s item(s) (lost message?): %s", len(ids), name, ids[:20])
        return sent


def start_failed(kind: str, pk: int, exc: BaseException) -> float | None:
    """A task of ``kind`` raised before it claimed item ``pk``: seconds to wait before its retry,
    or None when this was its last attempt and the item was ended ``failed`` with ``exc`` (or had
    left its waiting status already)."""
    from annotator.services.generation import failure_text

    spec = KINDS[kind]
    r = flags.redis_client()
    key = _key(kind, pk, "start_failures")
    attempts = int(r.incr(key))
    r.expire(key, 86400)
    if attempts < settings.WORKER_START_ATTEMPTS:
        log.warning("%s %s: attempt %d to start failed (%s); retrying", kind, pk, attempts, failure_text(exc))
        return min(2.0**attempts, RETRY_CAP_S)
    error = (f"No worker could start this {spec.what}: {attempts} attempts failed; the last with "
             f"{failure_text(exc)}")
    if spec.fail(pk, error):
        log.error("%s %s: ended failed after %d attempts to start it", kind, pk, attempts)
    r.delete(key)
    return None


@contextlib.contextmanager
def retried_until_claimed(task, kind: str, pk: int) -> Iterator[None]:
    """Around a task's body (``task`` bound). The services end every item they claimed, whatever
    raises; what escapes them was raised before the claim (the database refused the connection,
    say), and the item is still waiting. The task is retried with back-off, and after
    ``WORKER_START_ATTEMPTS`` the item ends ``failed`` with the error (``start_failed``)."""
    try:
        yield
    except Exception as exc:
        log.exception("%s %s: the task failed before its claim", kind, pk)
        retry_in = start_failed(kind, pk, exc)
        if retry_in is not None:
            raise task.retry(countdown=retry_in, exc=exc, max_retries=None) from exc
