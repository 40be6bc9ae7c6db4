"""Streaming writers: content hash, deterministic split, JSONL/Parquet round-trip, HF folder zip."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from annotator.datasets.materialise import arrow_schema, materialise
from annotator.datasets.records import Corpus, StepLabelRec, StepRec, TraceRec
from annotator.datasets.writers import (
    canonical_hash,
    iter_jsonl_chunks,
    split_of,
    with_split,
    write_hf_zip,
    write_jsonl,
    write_parquet,
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
    relabelled = TraceRec(
        **{
            **t1.__dict__,
            "steps": [t1.steps[0], StepRec(1, t1.steps[1].text, labels=[StepLabelRec("alice", -1)]), *t1.steps[2:]],
        }
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
