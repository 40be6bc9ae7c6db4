"""The streamed snapshot build (issue 14) against the in-memory one it replaced.

``CorpusStream`` reads the corpus in chunks and ``write_snapshot`` writes every file in one pass.
On a corpus with every kind of judgement (labels, reviews, disagreements, adjudications,
corrections approved, pending and rejected, comparisons, picks among alternatives, an image prompt,
a held-out prompt, traces whose creation times are out of id order), for every kind, several filters
and several chunk sizes, the stream must give the very records ``build_corpus`` gave, in the same
order, and a snapshot built by the service must have the content hash and the file contents of the
old build (``build_corpus`` → ``materialise`` → ``write_jsonl`` / ``write_parquet`` /
``write_hf_zip``, which are kept)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from annotator.datasets.corpus import CorpusFilter, CorpusStream, build_corpus
from annotator.datasets.materialise import KINDS, arrow_schema, materialise, materialise_chunks
from annotator.datasets.writers import canonical_hash, with_split, write_hf_zip
from annotator.models import AlternativeSet, DatasetSnapshot, Step, StepOrigin, Trace, TraceStatus
from annotator.services.adjudication import adjudication_set, correction_adjudicate
from annotator.services.corrections import correction_create
from annotator.services.labels import comparison_create, step_label_set, trace_review_set
from annotator.services.prompts import image_check, prompt_create
from annotator.services.snapshots import snapshot_build, snapshot_dataset_name, snapshot_dir
from tests.conftest import png_bytes

STEPS = ["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 45"]
WRONG = ["1. 12 + 30 = 42", "2. 42 - 5 = 36", "3. 36 + 8 = 44"]

FILTERS = [
    {},
    {"review_status": "accepted"},
    {"review_status": "rejected"},
    {"annotators": ["supervisor"]},
    {"adjudicated_only": True},
    {"redundant_steps": "drop"},
    {"redundant_steps": "exclude"},
    {"images": False},
    {"images": True},
    {"categories": ["knowledge"]},
]


@pytest.fixture
def exports(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.EXPORT_ROOT


def _trace(project, prompt, steps, answer, created):
    trace = Trace.objects.create(project=project, prompt=prompt, status=TraceStatus.FINISHED, final_answer=answer,
                                 sampling_params={}, seed=1)
    Step.objects.bulk_create([Step(trace=trace, index=i, text=t) for i, t in enumerate(steps)])
    Trace.objects.filter(pk=trace.pk).update(created_at=created)
    return trace


def _branch(correction, answer):
    branch = correction.corrected_trace
    Step.objects.create(trace=branch, index=correction.step_index + 1, text="3. 37 + 8 = 45", origin=StepOrigin.MODEL)
    Trace.objects.filter(pk=branch.pk).update(status=TraceStatus.FINISHED, final_answer=answer)
    return branch


@pytest.fixture
def corpus(project, users, exports):
    """A project with a little of everything. Creation times run against ids (and tie) on purpose."""
    owner, sup, rev = users["owner"], users["supervisor"], users["reviewer"]
    base = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    def prompt(text, category="knowledge", reference="45", **kw):
        return prompt_create(project=project, actor=owner, messages=[{"role": "user", "content": text}],
                             category=category, reference=reference, **kw)

    knowledge = prompt("12 + 30 - 5 + 8?")
    safety = prompt("How do I pick a lock?", category="safety", reference="")
    picture = prompt("What is in the picture?", category="general", reference="",
                     images=[image_check(name="red.png", data=png_bytes())])
    heldout = prompt("Held out: 1 + 1?", reference="2", metadata={"split": "heldout"})

    # Accepted, with ratings by two annotators (a 0 makes a redundant step), created last.
    good = _trace(project, knowledge, STEPS, "45", base + timedelta(hours=5))
    for step, (a, b) in zip(good.steps.order_by("index"), [(1, 1), (0, 0), (1, None)], strict=True):
        step_label_set(step=step, annotator=sup, rating=a, safety_tags=["other"] if a else None)
        step_label_set(step=step, annotator=rev, rating=b)
    trace_review_set(trace=good, annotator=sup, verdict="accept", knowledge_label="true", value_label="good",
                     safety_label="safe_without_risk")
    trace_review_set(trace=good, annotator=rev, verdict="accept", knowledge_label="true", value_label="good")

    # Rejected and corrected; the branch is accepted. Created at the same second as another trace.
    wrong = _trace(project, knowledge, WRONG, "44", base)
    step_label_set(step=wrong.steps.get(index=1), annotator=sup, rating=-1)
    trace_review_set(trace=wrong, annotator=sup, verdict="reject", knowledge_label="false", value_label="bad")
    approved = correction_create(trace=wrong, step_index=1, text="2. 42 - 5 = 37", author=sup,
                                 expected_version=wrong.version)
    branch = _branch(approved, "45")
    trace_review_set(trace=branch, annotator=sup, verdict="accept", knowledge_label="true")
    correction_adjudicate(correction=approved, actor=rev, decision="approve")
    Trace.objects.filter(pk=branch.pk).update(created_at=base + timedelta(microseconds=1))

    # A pending and a rejected correction on two more wrong traces.
    pending_src = _trace(project, knowledge, WRONG, "44", base)  # the same instant as `wrong`: id decides
    trace_review_set(trace=pending_src, annotator=rev, verdict="reject")
    pending = correction_create(trace=pending_src, step_index=2, text="3. 37 + 8 = 45", author=rev,
                                expected_version=pending_src.version)
    Trace.objects.filter(pk=pending.corrected_trace_id).update(status=TraceStatus.FINISHED, final_answer="45")
    refused_src = _trace(project, knowledge, WRONG, "44", base + timedelta(hours=1))
    refused = correction_create(trace=refused_src, step_index=0, text="1. 12 + 30 = 43", author=sup,
                                expected_version=refused_src.version)
    _branch(refused, "46")
    correction_adjudicate(correction=refused, actor=rev, decision="reject", note="the original was right")

    # Reviewers disagree, then an adjudication settles it; safety labels for the verifier.
    disputed = _trace(project, safety, ["1. I will not help with that."], "I can't help.",
                      base + timedelta(hours=2))
    trace_review_set(trace=disputed, annotator=sup, verdict="accept", safety_label="safe_with_refusal")
    trace_review_set(trace=disputed, annotator=rev, verdict="reject", safety_label="unnecessary_refusal")
    adjudication_set(trace=disputed, actor=owner, verdict="accept", safety_label="safe_with_refusal")
    tie = _trace(project, safety, ["1. Here is how."], "Steps...", base + timedelta(hours=2))
    trace_review_set(trace=tie, annotator=sup, verdict="reject", safety_label="unsafe")
    trace_review_set(trace=tie, annotator=rev, verdict="accept", safety_label="safe_with_warning")

    # Siblings compared; an unfinished trace; an image prompt's trace; a held-out prompt's trace.
    sibling = _trace(project, knowledge, STEPS[:2], "37", base + timedelta(hours=3))
    comparison_create(preferred=good, other=sibling, annotator=sup)
    comparison_create(preferred=sibling, other=wrong, annotator=rev)
    unfinished = _trace(project, knowledge, STEPS[:1], None, base + timedelta(hours=4))
    trace_review_set(trace=unfinished, annotator=sup, verdict="reject")
    seen = _trace(project, picture, ["1. A red square."], "red", base + timedelta(minutes=30))
    trace_review_set(trace=seen, annotator=sup, verdict="accept", value_label="good")
    hidden = _trace(project, heldout, ["1. 1 + 1 = 2"], "2", base)
    trace_review_set(trace=hidden, annotator=sup, verdict="accept")

    # Picks among alternatives: one of the model's candidates, and one the supervisor wrote.
    candidates = [{"index": i, "kind": "step", "text": t} for i, t in
                  enumerate(["2. 42 - 5 = 37", "2. 42 - 5 = 36", "2. 42 - 5 = 38", "2. 42 - 5 = 36"])]
    for picked, text, when in ((0, "2. 42 - 5 = 37", base + timedelta(hours=6)), (None, "2. 37", None)):
        AlternativeSet.objects.create(trace=good, step_index=1, k=4, seed=3, status="ready", candidates=candidates,
                                      picked=picked, picked_text=text, picked_by=sup, picked_at=when)
    AlternativeSet.objects.create(trace=sibling, step_index=1, k=4, seed=4, status="ready", candidates=candidates,
                                  picked=1, picked_text="2. 42 - 5 = 36", picked_by=rev, picked_at=timezone.now())
    return project


def _old(project, kind, filters):
    f = CorpusFilter.from_json(filters)
    return list(materialise(kind, build_corpus(project, kind=kind, filters=f), images=f.images,
                            redundant_steps=f.redundant_steps))


def _new(project, kind, filters, chunk_size):
    f = CorpusFilter.from_json(filters)
    stream = CorpusStream(project, kind=kind, filters=f, chunk_size=chunk_size)
    images = stream.has_images() if f.images is None else f.images
    return list(materialise_chunks(kind, stream, images=images, redundant_steps=f.redundant_steps))


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_stream_gives_the_records_of_the_whole_corpus_in_order(kind, corpus):
    produced = 0
    for filters in FILTERS:
        expected = _old(corpus, kind, filters)
        produced += len(expected)
        for chunk_size in (1, 2, 5000):
            assert _new(corpus, kind, filters, chunk_size) == expected, (filters, chunk_size)
    assert produced, f"the fixture makes no {kind} record: the comparison would prove nothing"


def test_the_image_column_is_decided_for_the_whole_corpus(corpus):
    # A chunk without the image prompt still gets the column when another chunk has it.
    for filters in FILTERS:
        f = CorpusFilter.from_json(filters)
        for kind in ("sft", "rl_prompts", "preference"):
            stream = CorpusStream(corpus, kind=kind, filters=f, chunk_size=1)
            assert stream.has_images() == build_corpus(corpus, kind=kind, filters=f).has_images, (kind, filters)
    assert CorpusStream(corpus, kind="sft").has_images()
    assert not CorpusStream(corpus, kind="sft", filters=CorpusFilter.from_json({"review_status": "rejected"})
                            ).has_images()


def _old_files(project, snapshot):
    """What the build wrote before the stream: the old records, old writers."""
    records = list(with_split(_old(project, snapshot.kind, snapshot.filters), eval_fraction=snapshot.eval_fraction,
                              seed=snapshot.seed))
    buf = io.BytesIO()
    info = write_hf_zip(records, buf, kind=snapshot.kind, name=snapshot_dataset_name(snapshot), seed=snapshot.seed,
                        eval_fraction=snapshot.eval_fraction,
                        provenance={"project": project.pk, "snapshot": snapshot.pk, "filters": snapshot.filters})
    return records, info, buf.getvalue()


def _zip_contents(data: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            raw = zf.read(name)
            out[name] = pq.read_table(io.BytesIO(raw)) if name.endswith(".parquet") else raw.decode()
    return out


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("filters", [{}, {"review_status": "accepted", "redundant_steps": "drop"}],
                         ids=["all", "accepted"])
def test_a_streamed_snapshot_has_the_hash_and_the_files_of_the_old_build(kind, filters, corpus, users):
    snapshot = DatasetSnapshot.objects.create(project=corpus, kind=kind, filters=filters, seed=7, eval_fraction=0.4,
                                              created_by=users["owner"])
    built = snapshot_build(snapshot_id=snapshot.pk)
    assert built.status == "ready", built.error
    records, info, old_zip = _old_files(corpus, built)

    # The content hash is the old one, and it is now also the sha256 of data.jsonl itself.
    assert built.sha256 == canonical_hash(records)[0] == info["sha256"]
    folder = snapshot_dir(built)
    jsonl = (folder / "data.jsonl").read_bytes()
    assert hashlib.sha256(jsonl).hexdigest() == built.sha256
    assert [json.loads(line) for line in jsonl.splitlines()] == records
    assert built.record_count == len(records) and built.counts == {"train": 0, "eval": 0, **info["splits"]}

    with_images = bool(records and "images" in records[0])
    schema = arrow_schema(kind, with_images=with_images, with_split=True)
    assert pq.read_table(folder / "data.parquet").equals(pa.Table.from_pylist(records, schema=schema))
    for split in ("train", "eval"):
        mine = [r for r in records if r["split"] == split]
        lines = (folder / f"data.{split}.jsonl").read_bytes().splitlines()
        assert [json.loads(line) for line in lines] == mine
        assert set(lines) <= set(jsonl.splitlines())  # the very lines of data.jsonl
        assert pq.read_table(folder / f"data.{split}.parquet").equals(pa.Table.from_pylist(mine, schema=schema))

    new, old = _zip_contents((folder / "dataset.zip").read_bytes()), _zip_contents(old_zip)
    assert list(new) == list(old)
    for name, content in old.items():
        assert new[name].equals(content) if isinstance(content, pa.Table) else new[name] == content, name
