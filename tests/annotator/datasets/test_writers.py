"""Streaming writers: content hash, deterministic split, JSONL/Parquet round-trip, HF folder zip."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from annotator.datasets.materialise import arrow_schema, materialise
from annotator.datasets.records import Corpus, StepLabelRec, StepRec
from annotator.datasets.writers import (
    canonical_hash,
    iter_jsonl_chunks,
    split_of,
    with_split,
    write_hf_zip,
    write_jsonl,
    write_parquet,
    write_snapshot,
)
from tests.annotator.datasets.test_materialise import build_corpus


def test_hash_is_stable_across_runs_and_key_order() -> None:
    first = canonical_hash(materialise("stepwise", build_corpus()))
    second = canonical_hash(materialise("stepwise", build_corpus()))
    assert first == second
    assert first[1] == 2
    reordered = [dict(reversed(list(r.items()))) for r in materialise("stepwise", build_corpus())]
    assert canonical_hash(reordered) == first


def test_hash_changes_when_one_label_changes() -> None:
    before, _ = canonical_hash(materialise("stepwise", build_corpus()))
    corpus = build_corpus()
    t1 = corpus.trace(10)
    relabelled = replace(
        t1, steps=[t1.steps[0], StepRec(1, t1.steps[1].text, labels=[StepLabelRec("alice", -1)]), *t1.steps[2:]]
    )
    changed = Corpus(
        prompts=corpus.prompts,
        traces=[relabelled, *corpus.traces[1:]],
        corrections=corpus.corrections,
        comparisons=corpus.comparisons,
    )
    after, _ = canonical_hash(materialise("stepwise", changed))
    assert after != before


def test_split_is_deterministic_by_prompt_and_seed() -> None:
    ids = [str(i) for i in range(400)]
    a = [split_of(i, eval_fraction=0.25, seed=3) for i in ids]
    assert a == [split_of(i, eval_fraction=0.25, seed=3) for i in ids]
    assert 60 < a.count("eval") < 140  # about a quarter
    assert a != [split_of(i, eval_fraction=0.25, seed=4) for i in ids]
    assert {split_of(i, eval_fraction=0.0, seed=3) for i in ids} == {"train"}


def test_jsonl_round_trip_binary_and_text_and_chunks() -> None:
    records = list(materialise("preference", build_corpus()))
    binary = io.BytesIO()
    assert write_jsonl(iter(records), binary) == 2
    assert [json.loads(line) for line in binary.getvalue().splitlines()] == records
    text = io.StringIO()
    write_jsonl(iter(records), text)
    assert text.getvalue().encode() == binary.getvalue()
    assert b"".join(iter_jsonl_chunks(iter(records), chunk_bytes=10)) == binary.getvalue()
    assert len(list(iter_jsonl_chunks(iter(records), chunk_bytes=10))) == 2


def test_parquet_round_trip_in_batches(tmp_path: Path) -> None:
    records = list(materialise("verifier_knowledge", build_corpus())) * 5
    path = tmp_path / "v.parquet"
    schema = arrow_schema("verifier_knowledge", with_images=True)
    assert write_parquet(iter(records), path, batch_size=3, schema=schema) == 10
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 4  # batches of 3: written as they came, not collected
    assert pq.read_table(path).to_pylist() == records


def test_parquet_keeps_types_when_the_first_batch_is_all_null(tmp_path: Path) -> None:
    records = list(materialise("rl_prompts", build_corpus()))
    records = [records[1], records[0]]  # reference None first
    path = tmp_path / "rl.parquet"
    write_parquet(iter(records), path, batch_size=1, schema=arrow_schema("rl_prompts", with_images=True))
    assert pq.read_table(path).column("reference").to_pylist() == [None, "42"]


def test_parquet_empty_input_with_schema_writes_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    assert write_parquet(iter([]), path, schema=arrow_schema("sft", with_images=False)) == 0
    assert pq.read_table(path).num_rows == 0


@pytest.fixture
def image_corpus(tmp_path: Path) -> Corpus:
    path = tmp_path / "sign.png"
    Image.new("RGB", (32, 32), "red").save(path)
    return build_corpus(str(path))


def _unzip(buf: io.BytesIO, dest: Path) -> list[str]:
    with zipfile.ZipFile(buf) as zf:
        zf.extractall(dest)
        return sorted(zf.namelist())


def _seed_splitting_prompts() -> int:
    # A seed that puts prompt 1 in train and prompt 2 in eval, so both splits are exercised.
    return next(
        s
        for s in range(1000)
        if split_of("1", eval_fraction=0.5, seed=s) == "train" and split_of("2", eval_fraction=0.5, seed=s) == "eval"
    )


def test_hf_zip_loads_with_datasets_with_splits_images_and_card(tmp_path: Path, image_corpus: Corpus) -> None:
    from datasets import load_dataset

    seed = _seed_splitting_prompts()
    buf = io.BytesIO()
    info = write_hf_zip(
        materialise("sft", image_corpus),
        buf,
        kind="sft",
        name="fix-sft",
        seed=seed,
        eval_fraction=0.5,
        provenance={"snapshot_id": 7, "project": "demo"},
    )
    assert info["count"] == 2 and info["splits"] == {"train": 1, "eval": 1}
    # The hash is over the records as written, each with its `split` key.
    split_records = with_split(materialise("sft", image_corpus), eval_fraction=0.5, seed=seed)
    assert info["sha256"] == canonical_hash(split_records)[0]
    names = _unzip(buf, tmp_path)
    assert names == [
        "fix-sft/README.md",
        "fix-sft/data/eval-00000-of-00001.parquet",
        "fix-sft/data/train-00000-of-00001.parquet",
    ]

    ds = load_dataset(str(tmp_path / "fix-sft"))
    assert {k: len(v) for k, v in ds.items()} == {"train": 1, "eval": 1}
    assert ds["train"][0]["trace_ids"] == ["11"] and ds["train"][0]["images"] == []
    image = ds["eval"][0]["images"][0]  # embedded: the folder is usable without our media files
    assert image.size == (32, 32)
    assert ds["eval"][0]["messages"][0] == {"role": "user", "content": "Is this safe?"}
    assert ds["train"]["split"] == ["train"] and ds["eval"]["split"] == ["eval"]

    card = (tmp_path / "fix-sft" / "README.md").read_text()
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["safeladder"]["sha256"] == info["sha256"]
    assert meta["safeladder"]["snapshot_id"] == 7
    assert meta["safeladder"]["kind"] == "sft"
    assert meta["license"] == "other"
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == {"train": 1, "eval": 1}


def test_hf_zip_of_empty_export_has_card_and_typed_empty_train_file(tmp_path: Path) -> None:
    # datasets refuses to build a split with no rows ("corresponds to no data"), so an empty
    # export is a valid zip whose card says 0 and whose Parquet file still has the kind's columns.
    buf = io.BytesIO()
    info = write_hf_zip(iter([]), buf, kind="preference", name="empty", provenance={})
    assert info == {"sha256": canonical_hash([])[0], "count": 0, "splits": {"train": 0}}
    _unzip(buf, tmp_path)
    table = pq.read_table(tmp_path / "empty" / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == 0 and "chosen" in table.column_names
    assert "num_records: 0" in (tmp_path / "empty" / "README.md").read_text()


def test_hf_zip_writes_to_an_unseekable_stream(tmp_path: Path) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            self.data += bytes(b)
            return len(b)

    out = Unseekable()
    write_hf_zip(materialise("stepwise", build_corpus()), out, kind="stepwise", name="s", provenance={})
    assert "s/README.md" in _unzip(io.BytesIO(bytes(out.data)), tmp_path)


# --- write_snapshot: every file of a snapshot in one pass --------------------------------------------


def _snapshot(records, folder: Path, **kw) -> dict:
    return write_snapshot(
        records,
        jsonl=folder / "data.jsonl",
        parquet=folder / "data.parquet",
        split_jsonl={s: folder / f"data.{s}.jsonl" for s in ("train", "eval")},
        split_parquet={s: folder / f"data.{s}.parquet" for s in ("train", "eval")},
        hf_zip=folder / "dataset.zip",
        **kw,
    )


def _zipped(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as zf:
        return {n: pq.read_table(io.BytesIO(zf.read(n))) if n.endswith(".parquet") else zf.read(n).decode()
                for n in zf.namelist()}


@pytest.mark.parametrize("batch_size", [1, 2, 10_000])
def test_snapshot_files_hold_what_the_single_writers_write(tmp_path: Path, image_corpus: Corpus, batch_size) -> None:
    seed = _seed_splitting_prompts()
    records = list(with_split(materialise("sft", image_corpus), eval_fraction=0.5, seed=seed))
    info = _snapshot(iter(records), tmp_path, kind="sft", name="fix-sft", seed=seed, eval_fraction=0.5,
                     provenance={"snapshot_id": 7}, batch_size=batch_size)
    zipped = io.BytesIO()
    assert info == write_hf_zip(records, zipped, kind="sft", name="fix-sft", seed=seed, eval_fraction=0.5,
                                provenance={"snapshot_id": 7})
    # data.jsonl is the canonical JSON of the records, so its own sha256 is the content hash.
    jsonl = (tmp_path / "data.jsonl").read_bytes()
    assert hashlib.sha256(jsonl).hexdigest() == info["sha256"] == canonical_hash(records)[0]
    assert [json.loads(line) for line in jsonl.splitlines()] == records
    schema = arrow_schema("sft", with_images=True, with_split=True)
    assert pq.read_table(tmp_path / "data.parquet").equals(pa.Table.from_pylist(records, schema=schema))
    for split in ("train", "eval"):
        mine = [r for r in records if r["split"] == split]
        assert [json.loads(x) for x in (tmp_path / f"data.{split}.jsonl").read_bytes().splitlines()] == mine
        assert pq.read_table(tmp_path / f"data.{split}.parquet").equals(pa.Table.from_pylist(mine, schema=schema))
    # The zip embeds the image bytes, as write_hf_zip does.
    new, old = _zipped(tmp_path / "dataset.zip"), _zipped(zipped)
    assert list(new) == list(old)
    for name, content in old.items():
        assert new[name].equals(content) if isinstance(content, pa.Table) else new[name] == content, name
    assert new["fix-sft/data/eval-00000-of-00001.parquet"]["images"][0][0]["bytes"].as_py().startswith(b"\x89PNG")


def test_snapshot_of_no_records_is_a_set_of_empty_typed_files(tmp_path: Path) -> None:
    info = _snapshot(iter([]), tmp_path, kind="preference", name="empty")
    assert info == {"sha256": canonical_hash([])[0], "count": 0, "splits": {"train": 0}}
    assert (tmp_path / "data.jsonl").read_bytes() == b""
    for name in ("data.parquet", "data.train.parquet", "data.eval.parquet"):
        table = pq.read_table(tmp_path / name)
        assert table.num_rows == 0 and "chosen" in table.column_names
    assert list(_zipped(tmp_path / "dataset.zip")) == ["empty/data/train-00000-of-00001.parquet", "empty/README.md"]


def test_snapshot_writer_fails_with_the_first_error_and_leaves_no_thread(tmp_path: Path) -> None:
    def records():
        yield from with_split(materialise("stepwise", build_corpus()), eval_fraction=0.5, seed=0)
        raise OSError("the database went away")

    before = threading.active_count()
    with pytest.raises(OSError, match="the database went away"):
        _snapshot(records(), tmp_path, kind="stepwise", name="s", batch_size=1)
    assert threading.active_count() == before
    # A record the kind's schema cannot hold fails in the writer thread and reaches the caller.
    bad = [{**r, "labels": "not a list"} for r in with_split(materialise("stepwise", build_corpus()),
                                                                 eval_fraction=0.5, seed=0)]
    with pytest.raises(pa.ArrowInvalid):
        _snapshot(iter(bad), tmp_path, kind="stepwise", name="s", batch_size=1)
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="split 'test' is not one of train, eval"):
        _snapshot(iter([{"split": "test"}]), tmp_path, kind="stepwise", name="s")
    assert threading.active_count() == before
