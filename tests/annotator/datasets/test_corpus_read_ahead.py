"""CorpusStream outside a transaction reads the next chunks in a reader thread, on its own database
connection, while the caller materialises and writes the current one (a worker's snapshot build).

Inside a transaction (a request, or a test's) another connection could not see the transaction's
rows, so the stream reads on the caller's connection; the other tests of the stream run that way.
These run outside one: the records must be the same, an error in the reader must reach the build,
and the reader's thread and connection must be gone when the stream ends or is left early."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from annotator.datasets.corpus import CorpusStream
from annotator.models import DatasetSnapshot
from annotator.services.snapshots import snapshot_build
from tests.annotator.datasets import test_snapshot_stream as stream_tests

# The corpus with a little of everything, and the way the stream tests read it.
corpus, exports, _new = stream_tests.corpus, stream_tests.exports, stream_tests._new

pytestmark = pytest.mark.django_db(transaction=True)


def _backends() -> int:
    """Connections to the test database, this test's own included."""
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cur.fetchone()[0]


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "corpus-reader"]


def _settled(before: int) -> None:
    """The reader thread has ended and its connection is closed (its backend exits just after)."""
    assert not _readers()
    deadline = time.monotonic() + 5
    while _backends() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _backends() == before


@pytest.fixture
def reader_threads(monkeypatch):
    """The names of the threads that read the chunks' reviews (every kind reads them per chunk)."""
    names: list[str] = []
    original = CorpusStream._judged

    def judged(self, ids):
        names.append(threading.current_thread().name)
        return original(self, ids)

    monkeypatch.setattr(CorpusStream, "_judged", judged)
    return names


@pytest.mark.parametrize("kind", ["sft", "stepwise", "preference", "preference_step", "rl_prompts"])
def test_outside_a_transaction_the_chunks_are_read_ahead_with_the_same_records(kind, corpus, reader_threads):
    with transaction.atomic():
        expected = _new(corpus, kind, {}, 2)
    assert expected, f"the fixture makes no {kind} record"
    in_transaction = list(reader_threads)
    reader_threads.clear()
    before = _backends()

    assert _new(corpus, kind, {}, 2) == expected
    if kind != "rl_prompts":  # its chunks read no reviews
        assert set(in_transaction) == {"MainThread"}
        assert set(reader_threads) - {"MainThread"} == {"corpus-reader"}  # has_images() runs on the caller's
    _settled(before)


def test_an_error_in_the_reader_fails_the_snapshot_with_its_reason(corpus, users, monkeypatch):
    def broken(self, rows):
        raise RuntimeError("the database went away mid-read")

    monkeypatch.setattr(CorpusStream, "_trace_recs", broken)
    before = _backends()
    snapshot = DatasetSnapshot.objects.create(project=corpus, kind="sft", created_by=users["owner"])
    built = snapshot_build(snapshot_id=snapshot.pk)
    assert built.status == "failed"
    assert built.error == "RuntimeError: the database went away mid-read"
    _settled(before)


def test_a_caller_that_stops_early_stops_the_reader_and_closes_its_connection(corpus):
    before = _backends()
    chunks = iter(CorpusStream(corpus, kind="sft", chunk_size=1))
    first = next(chunks)
    assert len(first.traces) == 1 and _readers()
    chunks.close()
    _settled(before)


def test_a_snapshot_built_outside_a_transaction_is_the_one_built_inside(corpus, users):
    def build():
        snapshot = DatasetSnapshot.objects.create(project=corpus, kind="sft", seed=3, created_by=users["owner"])
        return snapshot_build(snapshot_id=snapshot.pk)

    with transaction.atomic():
        inside = build()
    outside = build()
    assert inside.status == outside.status == "ready"
    assert outside.record_count == inside.record_count > 0
    assert outside.sha256 == inside.sha256
