"""Nothing is ever stuck `building` (real PostgreSQL and Valkey): the sweep of lost snapshot builds
ends a snapshot whose heartbeat has been missing for the grace period `failed`; one whose builder
still beats is left alone; any error inside a build ends it `failed`, its reason on REST."""

from __future__ import annotations

import pytest
from django.db import connection

from annotator import flags
from annotator.models import AuditEvent, DatasetSnapshot, SnapshotStatus
from annotator.services.snapshots import LOST_ERROR, SnapshotSweep, snapshot_build, snapshot_create, snapshot_dir
from tests.annotator.datasets.test_snapshot_api import reviewed_trace


@pytest.fixture
def exports(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


def _building(project, users) -> DatasetSnapshot:
    """A snapshot left `building` by a worker that died (no heartbeat in Redis)."""
    snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft")
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.BUILDING)
    flags.redis_client().delete(flags.snapshot_owner_key(snapshot.pk))  # ids repeat across test databases
    return snapshot


def _detail(client_for, snapshot) -> dict:
    response = client_for("viewer").get(f"/api/projects/{snapshot.project_id}/datasets/{snapshot.pk}/")
    assert response.status_code == 200
    return response.json()


# --- the sweep ------------------------------------------------------------------------------------


def test_a_building_snapshot_without_heartbeat_ends_failed_after_the_grace_period(
    project, users, client_for, exports
):
    snapshot = _building(project, users)
    leftover = snapshot_dir(snapshot).parent / f".building-{snapshot.pk}-dead"
    leftover.mkdir(parents=True)
    sweep = SnapshotSweep(grace_s=6)
    assert sweep.run_once(now=100.0) == []  # first seen missing: not yet
    assert sweep.run_once(now=105.9) == []
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.BUILDING
    assert sweep.run_once(now=106.0) == [snapshot.pk]
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.FAILED and snapshot.finished_at is not None
    assert snapshot.error == LOST_ERROR and "worker building this snapshot was lost" in LOST_ERROR
    assert not leftover.exists()  # the dead builder's half-written folder is gone
    detail = _detail(client_for, snapshot)
    assert (detail["status"], detail["error"]) == ("failed", LOST_ERROR)
    assert AuditEvent.objects.filter(action="dataset_snapshot.failed", target_id=str(snapshot.pk)).count() == 1
    # Idempotent: ended once, by this sweep or another one.
    assert sweep.run_once(now=200.0) == [] and SnapshotSweep(grace_s=0).run_once(now=0.0) == []
    assert AuditEvent.objects.filter(action="dataset_snapshot.failed", target_id=str(snapshot.pk)).count() == 1


def test_a_snapshot_whose_builder_still_beats_is_left_alone(project, users, exports):
    snapshot = _building(project, users)
    beat = flags.SnapshotHeartbeat(snapshot.pk, "worker:1", ttl_s=9)
    beat.claim()
    sweep = SnapshotSweep(grace_s=6)
    assert sweep.run_once(now=100.0) == [] and sweep.run_once(now=200.0) == []
    flags.redis_client().delete(beat.key)
    assert sweep.run_once(now=300.0) == []  # missing (as after a Redis restart)...
    beat.claim()  # ...and its owner sets it again within a third of its lifetime
    assert sweep.run_once(now=303.0) == []
    assert sweep.run_once(now=400.0) == []
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.BUILDING
    beat.release()


def test_pending_ready_and_failed_snapshots_are_never_touched(project, prompt, users, exports):
    reviewed_trace(project, prompt, users)
    ready = snapshot_build(snapshot_id=snapshot_create(project=project, actor=users["owner"], kind="sft").pk)
    pending = snapshot_create(project=project, actor=users["owner"], kind="sft")
    failed = snapshot_create(project=project, actor=users["owner"], kind="sft")
    DatasetSnapshot.objects.filter(pk=failed.pk).update(status=SnapshotStatus.FAILED, error="earlier")
    sweep = SnapshotSweep(grace_s=0)
    assert sweep.run_once(now=0.0) == [] and sweep.run_once(now=10.0) == []
    statuses = dict(DatasetSnapshot.objects.values_list("pk", "status"))
    assert statuses == {ready.pk: "ready", pending.pk: "pending", failed.pk: "failed"}


def test_the_build_holds_a_heartbeat_and_releases_it(project, prompt, users, exports, monkeypatch):
    reviewed_trace(project, prompt, users)
    snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft")
    seen = {}
    import annotator.services.snapshots as snapshots

    real = snapshots._write_files

    def spy(snap, folder):
        seen["alive"] = flags.snapshot_owners_alive([snap.pk])[snap.pk]
        seen["status"] = DatasetSnapshot.objects.get(pk=snap.pk).status
        return real(snap, folder)

    monkeypatch.setattr(snapshots, "_write_files", spy)
    assert snapshot_build(snapshot_id=snapshot.pk).status == SnapshotStatus.READY
    assert seen == {"alive": True, "status": SnapshotStatus.BUILDING}
    assert not flags.snapshot_owners_alive([snapshot.pk])[snapshot.pk]  # released at the end


def test_a_second_delivery_while_the_builder_beats_does_nothing(project, users, exports):
    snapshot = _building(project, users)
    beat = flags.SnapshotHeartbeat(snapshot.pk, "worker:1", ttl_s=9)
    beat.claim()
    try:
        assert snapshot_build(snapshot_id=snapshot.pk).status == SnapshotStatus.BUILDING
    finally:
        beat.release()
    # Its builder gone (no heartbeat), a redelivered task builds it.
    assert snapshot_build(snapshot_id=snapshot.pk).status == SnapshotStatus.READY


# --- errors inside a build ------------------------------------------------------------------------


def test_an_unwritable_export_root_ends_the_snapshot_failed_with_its_reason(
    project, prompt, users, client_for, settings, tmp_path
):
    # Before: the folder was made outside the build's try, so this error left the snapshot `building`.
    settings.EXPORT_ROOT = tmp_path / "not-a-folder"
    settings.EXPORT_ROOT.write_text("a file where the export folder should be")
    reviewed_trace(project, prompt, users)
    snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft")
    assert snapshot_build(snapshot_id=snapshot.pk).status == SnapshotStatus.FAILED
    detail = _detail(client_for, snapshot)
    assert detail["status"] == "failed"
    assert detail["error"].startswith(("NotADirectoryError", "FileExistsError")), detail["error"]
    assert not flags.snapshot_owners_alive([snapshot.pk])[snapshot.pk]


@pytest.fixture
def refuse_ready():
    """A real database fault at the end of a build: a trigger that refuses to mark a snapshot ready
    (as a full disk or a lost connection would fail that update)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_ready() RETURNS trigger AS $$
            BEGIN
              IF NEW.status = 'ready' THEN RAISE EXCEPTION 'could not extend file: No space left on device'; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_refuse_ready BEFORE UPDATE ON annotator_datasetsnapshot
              FOR EACH ROW EXECUTE FUNCTION test_refuse_ready();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER test_refuse_ready ON annotator_datasetsnapshot; DROP FUNCTION test_refuse_ready();"
        )


def test_an_error_recording_the_ready_snapshot_ends_it_failed_with_its_reason(
    project, prompt, users, client_for, exports, refuse_ready
):
    # Before: `_finish` ran outside the build's try, so this error left the snapshot `building`.
    reviewed_trace(project, prompt, users)
    snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft")
    assert snapshot_build(snapshot_id=snapshot.pk).status == SnapshotStatus.FAILED
    detail = _detail(client_for, snapshot)
    assert detail["status"] == "failed" and "No space left on device" in detail["error"]
    assert detail["error"].startswith("ProgrammingError"), detail["error"]
    # No half-written folder is left beside the snapshots.
    assert not list(snapshot_dir(snapshot).parent.glob(f".building-{snapshot.pk}-*"))


# --- a real worker killed mid-build ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_does_not_leave_its_snapshot_building(
    default_worker, worker_tmp, project, prompt, users, client_for, settings
):
    """SIGKILL the worker mid-build (its whole process group, as a crash or the OOM killer would):
    the sweep of the session's default worker ends the snapshot `failed` within 30 s, on REST."""
    import time

    import psycopg

    from tests.support.live import start_worker, test_database_url

    queue = f"default-doomed-{time.monotonic_ns()}"
    doomed = start_worker(worker_tmp, queues=queue, name="doomed-snapshots", pool="threads", concurrency=1)
    settings.CELERY_TASK_DEFAULT_QUEUE = queue  # this build goes to the doomed worker only
    reviewed_trace(project, prompt, users)
    # Hold the build mid-way, deterministically: the corpus reads prompts, and this lock keeps it
    # waiting (with its heartbeat beating) until the worker is killed.
    blocker = psycopg.connect(test_database_url())
    try:
        blocker.execute("LOCK TABLE annotator_prompt IN ACCESS EXCLUSIVE MODE")
        snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft")  # enqueued at once
        deadline = time.monotonic() + 30
        while not flags.snapshot_owners_alive([snapshot.pk])[snapshot.pk] and time.monotonic() < deadline:
            time.sleep(0.1)
        snapshot.refresh_from_db()
        assert snapshot.status == SnapshotStatus.BUILDING, doomed.output()[-2000:]
        assert flags.snapshot_owners_alive([snapshot.pk])[snapshot.pk]
        doomed.kill()
        killed = time.monotonic()
        blocker.rollback()  # the lock goes; nobody is left to finish the build
        while time.monotonic() - killed < 40:
            detail = _detail(client_for, snapshot)
            if detail["status"] != "building":
                break
            time.sleep(0.25)
        took = time.monotonic() - killed
    finally:
        blocker.close()
        doomed.stop()
    assert detail["status"] == "failed", (detail, took, default_worker.output()[-2000:])
    assert detail["error"] == LOST_ERROR
    assert took < 30, f"the snapshot stayed building {took:.1f} s after its worker died"
