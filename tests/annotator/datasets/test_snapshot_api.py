"""Dataset snapshots through the REST API: roles, validation, frozen files and hashes, audit, and a
build by a real Celery worker."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.utils import timezone

from annotator.datasets.corpus import CorpusFilter, build_corpus
from annotator.datasets.materialise import arrow_schema
from annotator.datasets.writers import canonical_hash, split_of
from annotator.errors import InvalidInput
from annotator.models import AuditEvent, DatasetSnapshot, ModelVersion, Role, Trace
from annotator.services.labels import step_label_set, trace_review_set
from annotator.services.snapshots import snapshot_build, snapshot_create, snapshot_dataset_name
from tests.annotator.api.test_role_matrix import Case, _call, _expected
from tests.conftest import ROLES
from tests.factories import make_prompt, make_trace

STEPS = ["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 45"]


@pytest.fixture
def exports(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


def build(snapshot: DatasetSnapshot) -> DatasetSnapshot:
    """What the Celery task does (its on_commit enqueue never fires inside a `db` test's transaction)."""
    return snapshot_build(snapshot_id=snapshot.pk)


def reviewed_trace(project, prompt, users, *, verdict="accept", ratings=(1, 1, -1), answer="45"):
    trace = make_trace(project, prompt, steps=STEPS, answer=answer)
    for step, rating in zip(trace.steps.order_by("index"), ratings, strict=False):
        step_label_set(step=step, annotator=users["supervisor"], rating=rating)
    trace_review_set(trace=trace, annotator=users["supervisor"], verdict=verdict, knowledge_label="true")
    return trace


def create(project, users, kind="sft", **kw) -> DatasetSnapshot:
    return snapshot_create(project=project, actor=users["owner"], kind=kind, **kw)


def lines(response) -> list[dict]:
    body = b"".join(response.streaming_content)
    return [json.loads(line) for line in body.decode().splitlines()]


# --- roles ------------------------------------------------------------------------------------------

CASES = [
    Case("dataset list", "get", "/api/projects/{p}/datasets/", Role.VIEWER, 200),
    Case("dataset kinds", "get", "/api/projects/{p}/datasets/kinds/", Role.VIEWER, 200),
    Case("dataset detail", "get", "/api/projects/{p}/datasets/{d}/", Role.VIEWER, 200),
    Case("dataset create", "post", "/api/projects/{p}/datasets/", Role.OWNER, 201, {"kind": "sft"}),
    Case("dataset download", "get", "/api/projects/{p}/datasets/{d}/download/?format=jsonl", Role.OWNER, 200),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_role_matrix(case, role, project, prompt, users, client_for, exports):
    reviewed_trace(project, prompt, users)
    snapshot = build(create(project, users))
    response = _call(client_for(role), case, {"p": project.pk, "d": snapshot.pk})
    expected = _expected(case, role)
    assert response.status_code == expected, (case.name, role, getattr(response, "data", None))
    if expected in (401, 403, 404):
        assert response.json()["code"] in {"not_authenticated", "not_found", "forbidden"}


def test_snapshot_of_another_project_is_not_found(project, other_project, users, client_for, exports):
    foreign = snapshot_create(project=other_project, actor=users["outsider"], kind="sft")
    response = client_for("owner").get(f"/api/projects/{project.pk}/datasets/{foreign.pk}/")
    assert response.status_code == 404


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"kind": "nope"}, "not a valid choice"),
        ({"kind": "sft", "filters": {"categorys": ["safety"]}}, "Unknown filter"),
        ({"kind": "sft", "filters": {"categories": ["poetry"]}}, "not a valid choice"),
        ({"kind": "sft", "filters": {"review_status": "maybe"}}, "not a valid choice"),
        ({"kind": "sft", "filters": {"created_from": "last tuesday"}}, "Datetime has wrong format"),
        ({"kind": "sft", "filters": {"created_from": "2025-03-02", "created_to": "2025-03-01"}}, "range is empty"),
        ({"kind": "sft", "filters": {"annotators": ["nobody-here"]}}, "Unknown annotator(s): nobody-here"),
        ({"kind": "sft", "eval_fraction": 1.5}, "less than or equal to 0.99"),
    ],
)
def test_bad_kind_or_filters_answer_400_with_the_reason(body, reason, project, client_for, exports):
    response = client_for("owner").post(f"/api/projects/{project.pk}/datasets/", body, format="json")
    assert response.status_code == 400
    assert reason in json.dumps(response.json())
    assert not DatasetSnapshot.objects.filter(project=project).exists()


def test_model_version_of_another_project_is_refused(project, other_project, client_for, exports):
    foreign = ModelVersion.objects.create(project=other_project, name="theirs", base_model="/m")
    response = client_for("owner").post(
        f"/api/projects/{project.pk}/datasets/", {"kind": "sft", "filters": {"model_versions": [foreign.pk]}},
        format="json",
    )
    assert response.status_code == 400
    assert f"Model version(s) {foreign.pk} are not in this project" in response.json()["detail"]


def test_service_refuses_unknown_kind_with_the_known_ones(project, users):
    with pytest.raises(InvalidInput, match=r"Unknown dataset kind 'dpo'\. Known: sft, sft_prompt_completion"):
        create(project, users, kind="dpo")


# --- building, files, hashes ------------------------------------------------------------------------


def test_create_enqueues_on_commit_and_build_makes_downloadable_files(
    project, prompt, users, client_for, exports, django_capture_on_commit_callbacks
):
    reviewed_trace(project, prompt, users)
    owner = client_for("owner")
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner.post(f"/api/projects/{project.pk}/datasets/", {"kind": "sft", "name": "First"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "pending"
    assert len(callbacks) == 1  # the build task, sent only once the row is committed
    snapshot_id = response.json()["id"]
    pending = owner.get(f"/api/projects/{project.pk}/datasets/{snapshot_id}/download/")
    assert pending.status_code == 409 and pending.json()["code"] == "not_ready"

    build(DatasetSnapshot.objects.get(pk=snapshot_id))
    detail = owner.get(f"/api/projects/{project.pk}/datasets/{snapshot_id}/").json()
    assert detail["status"] == "ready" and detail["record_count"] == 1
    assert sum(detail["counts"].values()) == 1 and len(detail["sha256"]) == 64
    assert {d["format"] for d in detail["downloads"]} == {"jsonl", "parquet", "hf"}

    jsonl = owner.get(detail["downloads"][0]["url"])
    assert jsonl["Content-Disposition"] == f'attachment; filename="first-sft-{snapshot_id}.jsonl"'
    (record,) = lines(jsonl)
    assert record["messages"][-1]["content"] == "<think>\n" + "\n".join(STEPS) + "\n</think>\n45"
    assert record["annotators"] == ["supervisor"]

    hf = owner.get(f"/api/projects/{project.pk}/datasets/{snapshot_id}/download/?format=hf")
    names = zipfile.ZipFile(io.BytesIO(b"".join(hf.streaming_content))).namelist()
    assert f"first-sft-{snapshot_id}/README.md" in names
    parquet = owner.get(f"/api/projects/{project.pk}/datasets/{snapshot_id}/download/?format=parquet")
    assert b"".join(parquet.streaming_content)[:4] == b"PAR1"
    assert owner.get(f"/api/projects/{project.pk}/datasets/{snapshot_id}/download/?format=csv").status_code == 400


def test_empty_result_is_a_ready_snapshot_with_an_empty_jsonl(project, prompt, users, client_for, exports):
    make_trace(project, prompt, steps=STEPS, answer="45")  # never reviewed: no SFT record
    snapshot = build(create(project, users, kind="sft"))
    assert snapshot.status == "ready" and snapshot.record_count == 0
    assert snapshot.counts == {"train": 0, "eval": 0}
    response = client_for("owner").get(f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b""
    assert response["Content-Length"] == "0"


def test_hash_is_stable_and_changes_with_one_step_label(project, prompt, users, client_for, exports):
    trace = reviewed_trace(project, prompt, users)
    first = build(create(project, users, kind="stepwise"))
    again = build(create(project, users, kind="stepwise"))
    assert first.record_count == 1 and first.sha256 == again.sha256

    url = f"/api/projects/{project.pk}/datasets/{first.pk}/download/"
    before = b"".join(client_for("owner").get(url).streaming_content)
    step_label_set(step=trace.steps.get(index=2), annotator=users["supervisor"], rating=1)
    changed = build(create(project, users, kind="stepwise"))
    assert changed.sha256 != first.sha256
    assert json.loads(before)["labels"] == [True, True, False]

    # The earlier snapshot is frozen: same hash, same bytes; a rebuild request does nothing.
    assert build(first).sha256 == first.sha256
    first.refresh_from_db()
    assert first.sha256 == again.sha256
    assert b"".join(client_for("owner").get(url).streaming_content) == before
    changed_url = f"/api/projects/{project.pk}/datasets/{changed.pk}/download/"
    assert json.loads(b"".join(client_for("owner").get(changed_url).streaming_content))["labels"] == [True] * 3


def test_create_and_build_are_audited(project, prompt, users, client_for, exports):
    reviewed_trace(project, prompt, users)
    snapshot = build(create(project, users, kind="unpaired", filters={"categories": ["knowledge"]}))
    events = AuditEvent.objects.filter(project=project, target_type="datasetsnapshot", target_id=str(snapshot.pk))
    created, ready = events.order_by("id")
    assert (created.action, created.actor_id) == ("dataset_snapshot.created", users["owner"].pk)
    assert created.data["filters"] == {"categories": ["knowledge"]}
    assert ready.action == "dataset_snapshot.ready" and ready.data["sha256"] == snapshot.sha256
    log = client_for("owner").get(f"/api/projects/{project.pk}/audit/").json()["results"]
    assert {"dataset_snapshot.created", "dataset_snapshot.ready"} <= {e["action"] for e in log}


# --- filters --------------------------------------------------------------------------------------


def test_filters_select_the_rows_they_name(project, prompt, users, exports):
    from django.contrib.auth import get_user_model

    other_annotator = get_user_model().objects.create_user(username="second", password="x-long-password")
    safety_prompt = make_prompt(project, actor=users["owner"], text="Is this safe?", category="safety")
    model = ModelVersion.objects.create(project=project, name="sft-1", base_model="/m")
    kept = reviewed_trace(project, prompt, users)
    Trace.objects.filter(pk=kept.pk).update(model_version=model)
    old = reviewed_trace(project, safety_prompt, users)
    Trace.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    rejected = reviewed_trace(project, prompt, users, verdict="reject")
    second_only = make_trace(project, prompt, steps=STEPS, answer="45")
    trace_review_set(trace=second_only, annotator=other_annotator, verdict="accept")

    def ids(**filters):
        f = CorpusFilter.from_json(filters)
        return sorted(t.id for t in build_corpus(project, kind="sft", filters=f).traces)

    assert ids() == sorted([kept.pk, old.pk, rejected.pk, second_only.pk])
    assert ids(categories=["safety"]) == [old.pk]
    assert ids(model_versions=[model.pk]) == [kept.pk]
    assert ids(created_to=(timezone.now() - timedelta(days=1)).date().isoformat()) == [old.pk]
    assert ids(created_from=(timezone.now() - timedelta(days=1)).isoformat()) == sorted(
        [kept.pk, rejected.pk, second_only.pk]
    )
    assert ids(review_status="rejected") == [rejected.pk]
    # Only "second"'s judgements count: the supervisor's reviews vanish, so only second_only is accepted.
    assert ids(annotators=["second"], review_status="accepted") == [second_only.pk]
    snapshot = build(create(project, users, kind="sft", filters={"annotators": ["second"]}))
    assert snapshot.record_count == 1


def test_corpus_reads_in_a_fixed_number_of_queries(project, prompt, users, django_assert_max_num_queries):
    for _ in range(15):
        reviewed_trace(project, prompt, users)
    with django_assert_max_num_queries(10):  # one per table read, picks among alternatives included
        corpus = build_corpus(project, kind="stepwise")
    assert len(corpus.traces) == 15 and all(len(t.steps) == 3 and t.steps[0].labels for t in corpus.traces)


# --- a real worker ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_snapshot_is_built_by_the_celery_worker(default_worker, project, prompt, users, client_for):
    reviewed_trace(project, prompt, users)
    owner = client_for("owner")
    created = owner.post(f"/api/projects/{project.pk}/datasets/", {"kind": "sft_prompt_completion"}, format="json")
    assert created.status_code == 201
    url = f"/api/projects/{project.pk}/datasets/{created.json()['id']}/"
    try:
        deadline = time.monotonic() + 60
        while (detail := owner.get(url).json())["status"] not in ("ready", "failed"):
            assert time.monotonic() < deadline, default_worker.output()[-3000:]
            time.sleep(0.2)
        assert detail["status"] == "ready", detail["error"]
        assert detail["record_count"] == 1
        (record,) = lines(owner.get(url + "download/?format=jsonl"))
        assert record["completion"][0]["content"].endswith("</think>\n45")
    finally:
        shutil.rmtree(settings.EXPORT_ROOT / str(project.pk), ignore_errors=True)


# --- splits -----------------------------------------------------------------------------------------


def _half_split_snapshot(project, users) -> DatasetSnapshot:
    """A ready sft snapshot, eval_fraction 0.5, over six prompts, with a seed that puts records in both
    splits."""
    prompts = [make_prompt(project, actor=users["owner"], text=f"Question {i}?") for i in range(6)]
    for p in prompts:
        reviewed_trace(project, p, users)
    seed = next(
        s for s in range(1000) if len({split_of(str(p.pk), eval_fraction=0.5, seed=s) for p in prompts}) == 2
    )
    snapshot = build(create(project, users, kind="sft", seed=seed, eval_fraction=0.5))
    assert snapshot.status == "ready" and snapshot.counts["train"] and snapshot.counts["eval"]
    return snapshot


def _parquet_rows(response) -> list[dict]:
    return pq.read_table(io.BytesIO(b"".join(response.streaming_content))).to_pylist()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_every_record_has_its_split_and_split_downloads_partition_them(fmt, project, users, client_for, exports):
    snapshot = _half_split_snapshot(project, users)
    owner = client_for("owner")
    url = f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/?format={fmt}"
    read = lines if fmt == "jsonl" else _parquet_rows

    everything = read(owner.get(url))
    assert len(everything) == snapshot.record_count == 6
    assert {r["split"] for r in everything} == {"train", "eval"}
    for record in everything:  # the split is the prompt's, by the snapshot's seed and fraction
        assert record["split"] == split_of(record["prompt_id"], eval_fraction=0.5, seed=snapshot.seed)

    by_split = {}
    for split in ("train", "eval"):
        response = owner.get(f"{url}&split={split}")
        assert response.status_code == 200 and response["X-Dataset-Split"] == split
        assert response["Content-Disposition"].endswith(f'-{split}.{fmt}"')
        assert response["ETag"] == f'"{snapshot.sha256}-{fmt}-{split}"'
        by_split[split] = read(response)
        assert by_split[split] and {r["split"] for r in by_split[split]} == {split}
        assert len(by_split[split]) == snapshot.counts[split]
    # No overlap, and together exactly the whole download, in its order.
    train_ids = {r["trace_ids"][0] for r in by_split["train"]}
    assert not train_ids & {r["trace_ids"][0] for r in by_split["eval"]}
    assert sorted(by_split["train"] + by_split["eval"], key=everything.index) == everything


def test_parquet_has_a_stable_schema_with_the_split_column(project, users, client_for, exports):
    snapshot = _half_split_snapshot(project, users)
    owner = client_for("owner")
    url = f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/?format=parquet"
    expected = arrow_schema("sft", with_images=False, with_split=True)
    for suffix in ("", "&split=train", "&split=eval"):
        table = pq.read_table(io.BytesIO(b"".join(owner.get(url + suffix).streaming_content)))
        assert table.schema.remove_metadata() == expected and table.schema.names[-1] == "split"


def test_stored_hash_is_the_hash_of_the_served_records_with_their_split(project, users, client_for, exports):
    snapshot = _half_split_snapshot(project, users)
    owner = client_for("owner")
    base = f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/"
    assert canonical_hash(lines(owner.get(base)))[0] == snapshot.sha256
    archive = zipfile.ZipFile(io.BytesIO(b"".join(owner.get(base + "?format=hf").streaming_content)))
    card = archive.read(f"{snapshot_dataset_name(snapshot)}/README.md").decode()
    assert f"sha256: {snapshot.sha256}" in card
    eval_file = f"{snapshot_dataset_name(snapshot)}/data/eval-00000-of-00001.parquet"
    assert set(pq.read_table(io.BytesIO(archive.read(eval_file))).column("split").to_pylist()) == {"eval"}


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("format=jsonl&split=bogus", "split must be one of train, eval"),
        ("format=parquet&split=EVAL", "split must be one of train, eval"),
        ("format=hf&split=eval", "split applies to jsonl and parquet"),
    ],
)
def test_bad_split_answers_400_with_the_error_shape(query, reason, project, prompt, users, client_for, exports):
    reviewed_trace(project, prompt, users)
    snapshot = build(create(project, users))
    response = client_for("owner").get(f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "bad_split" and reason in body["detail"]


def test_empty_split_is_an_empty_file(project, prompt, users, client_for, exports):
    reviewed_trace(project, prompt, users)
    snapshot = build(create(project, users, eval_fraction=0))  # no eval split at all
    owner = client_for("owner")
    base = f"/api/projects/{project.pk}/datasets/{snapshot.pk}/download/"
    assert b"".join(owner.get(base + "?split=eval").streaming_content) == b""
    assert _parquet_rows(owner.get(base + "?format=parquet&split=eval")) == []
    assert [r["split"] for r in lines(owner.get(base + "?split=train"))] == ["train"]
