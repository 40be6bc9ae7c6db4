"""Streaming writers for materialised records: hash, split, JSONL, Parquet, Hugging Face folder zip.

Records go in as an iterable and bytes come out as they are produced; nothing holds the full list
(the zip writer spools each split to a temporary file on disk, not in memory). No Django here: the
web view wraps ``iter_jsonl_chunks`` in a StreamingHttpResponse and the default worker writes
snapshots with the same functions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from annotator.datasets.materialise import KINDS, arrow_schema

Record = dict[str, Any]


def _canonical(record: Record) -> str:
    # sort_keys + fixed separators: the same record always gives the same bytes.
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_hash(records: Iterable[Record]) -> tuple[str, int]:
    """sha256 over the canonical JSON of ``records`` in order, and how many there were."""
    digest = hashlib.sha256()
    count = 0
    for record in records:
        digest.update(_canonical(record).encode("utf-8"))
        digest.update(b"\n")
        count += 1
    return digest.hexdigest(), count


def split_of(prompt_id: Any, *, eval_fraction: float, seed: int) -> str:
    """'train' or 'eval' for a prompt: deterministic for (seed, prompt_id), so every record of one
    prompt lands in the same split and eval never leaks a prompt seen in training."""
    if eval_fraction <= 0:
        return "train"
    h = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return "eval" if int.from_bytes(h[:8], "big") / 2**64 < eval_fraction else "train"


SPLITS = ("train", "eval")


def with_split(records: Iterable[Record], *, eval_fraction: float, seed: int) -> Iterator[Record]:
    """``records`` with a last key ``split`` ("train" or "eval", by ``split_of`` their prompt). A
    record that already has one keeps it, so this is safe to apply twice."""
    for record in records:
        if "split" in record:
            yield record
        else:
            yield {**record, "split": split_of(record.get("prompt_id"), eval_fraction=eval_fraction, seed=seed)}


def iter_jsonl_chunks(records: Iterable[Record], *, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """JSON Lines as byte chunks of about ``chunk_bytes`` (for a StreamingHttpResponse)."""
    buf: list[bytes] = []
    size = 0
    for record in records:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        buf.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def write_jsonl(records: Iterable[Record], fileobj: IO[Any]) -> int:
    """Write JSON Lines to a binary or text file object; returns the number of records."""
    text = isinstance(fileobj, io.TextIOBase)
    count = 0
    for record in records:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        fileobj.write(line if text else line.encode("utf-8"))
        count += 1
    return count


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_parquet(
    records: Iterable[Record],
    fileobj_or_path: IO[bytes] | str | os.PathLike[str],
    *,
    batch_size: int = 1000,
    schema: pa.Schema | None = None,
) -> int:
    """Write Parquet in row groups of ``batch_size`` (memory bounded by one batch).

    Pass ``schema`` (``materialise.arrow_schema``) when you can: without it the schema is taken
    from the first batch, and a column that is null throughout that batch would get a null type.
    An empty input still writes a valid file when ``schema`` is given.
    """
    sink = os.fspath(fileobj_or_path) if isinstance(fileobj_or_path, str | os.PathLike) else fileobj_or_path
    writer: pq.ParquetWriter | None = None
    count = 0
    try:
        for batch in _batches(records, batch_size):
            table = pa.Table.from_pylist(batch, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(sink, schema)
            writer.write_table(table)
            count += len(batch)
        if writer is None and schema is not None:
            writer = pq.ParquetWriter(sink, schema)
    finally:
        if writer is not None:
            writer.close()
    return count


# ---------------------------------------------------------------------------------------------
# Hugging Face dataset folder, zipped

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _embed_images(record: Record) -> Record:
    # Image bytes go inside the Parquet file (datasets' Image storage: {bytes, path}) so the
    # unzipped folder is self-contained on a training machine that has no access to our media.
    out = dict(record)
    out["images"] = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in record["images"]]
    return out


def _card(
    *,
    kind: str,
    name: str,
    counts: dict[str, int],
    sizes: dict[str, int],
    features_yaml: list[Any],
    sha256: str,
    seed: int,
    eval_fraction: float,
    license: str,
    provenance: dict[str, Any],
) -> str:
    import yaml  # PyYAML comes with datasets / huggingface_hub

    splits = [s for s in ("train", "eval") if counts.get(s) or s == "train"]
    meta = {
        "pretty_name": name,
        "license": license,
        "tags": ["safeladder", kind],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ],
        "dataset_info": {
            "features": features_yaml,
            # datasets ignores a split entry without num_bytes; it then checks num_examples on load.
            "splits": [{"name": s, "num_bytes": sizes.get(s, 0), "num_examples": counts.get(s, 0)} for s in splits],
        },
        "safeladder": {
            "kind": kind,
            "trainer": KINDS[kind].trainer,
            "sha256": sha256,
            "num_records": sum(counts.values()),
            "split_seed": seed,
            "eval_fraction": eval_fraction,
            **provenance,
        },
    }
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    rows = "\n".join(f"| {s} | {counts.get(s, 0)} |" for s in splits)
    return (
        f"---\n{header}---\n\n# {name}\n\n{KINDS[kind].description}\n\n"
        f"Feeds: {KINDS[kind].trainer}. Exported by SafeLadder Studio; "
        "see docs/datasets.md for the rules.\n\n"
        f"| split | records |\n| --- | --- |\n{rows}\n\n"
        f"Content hash (sha256 of canonical JSON records, in order): `{sha256}`\n\n"
        '```python\nfrom datasets import load_dataset\nds = load_dataset("path/to/this/folder")\n```\n'
    )


def write_hf_zip(
    records: Iterable[Record],
    fileobj: IO[bytes],
    *,
    kind: str,
    name: str,
    seed: int = 0,
    eval_fraction: float = 0.1,
    provenance: dict[str, Any] | None = None,
    license: str = "other",
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Zip a folder that ``datasets.load_dataset(folder)`` reads: ``README.md`` (dataset card with
    configs, features, split counts, provenance) and ``data/{train,eval}-00000-of-00001.parquet``.

    Records are split by prompt (``with_split``: a record's own ``split`` key wins, else
    ``split_of``), spooled per split to temporary files (disk, not memory), then copied into the
    zip, which may be an unseekable stream. Every row keeps its ``split`` column, and the hash is
    over the records with that key, so it equals ``canonical_hash`` of the snapshot's JSONL.
    Returns ``{"sha256", "count", "splits": {split: n}}``.
    """
    from datasets import Features, Image, List  # heavy import, only for the card's feature types

    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain folder name")

    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    writers: dict[str, pq.ParquetWriter] = {}
    pending: dict[str, list[Record]] = {}
    schema: pa.Schema | None = None
    file_schema: pa.Schema | None = None
    with tempfile.TemporaryDirectory(prefix="hfzip-") as tmp:

        def flush(split: str) -> None:
            batch = pending.pop(split, [])
            if not batch:
                return
            if "images" in file_schema.names:
                batch = [_embed_images(r) for r in batch]
            if split not in writers:
                writers[split] = pq.ParquetWriter(os.path.join(tmp, f"{split}.parquet"), file_schema)
            writers[split].write_table(pa.Table.from_pylist(batch, schema=file_schema))

        for record in with_split(records, eval_fraction=eval_fraction, seed=seed):
            if schema is None:
                schema = arrow_schema(kind, with_images="images" in record, with_split=True)
                file_schema = schema
                if "images" in schema.names:
                    idx = schema.get_field_index("images")
                    file_schema = schema.set(idx, pa.field("images", pa.list_(_IMAGE_STRUCT)))
            digest.update(_canonical(record).encode("utf-8") + b"\n")
            split = record["split"]
            if split not in SPLITS:
                raise ValueError(f"record split {split!r} is not one of {', '.join(SPLITS)}")
            counts[split] = counts.get(split, 0) + 1
            pending.setdefault(split, []).append(record)
            if len(pending[split]) >= batch_size:
                flush(split)
        if schema is None:  # empty export: an empty train split with the kind's columns
            schema = file_schema = arrow_schema(kind, with_images=False, with_split=True)
        for split in list(pending):
            flush(split)
        if "train" not in writers:
            writers["train"] = pq.ParquetWriter(os.path.join(tmp, "train.parquet"), file_schema)
        for writer in writers.values():
            writer.close()

        features = Features.from_arrow_schema(schema)
        if "images" in schema.names:
            features["images"] = List(Image())
        sha = digest.hexdigest()
        sizes = {s: os.path.getsize(os.path.join(tmp, f"{s}.parquet")) for s in writers}
        card = _card(
            kind=kind,
            name=name,
            counts=counts,
            sizes=sizes,
            features_yaml=features._to_yaml_list(),
            sha256=sha,
            seed=seed,
            eval_fraction=eval_fraction,
            license=license,
            provenance=provenance or {},
        )
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for split in sorted(writers):
                with (
                    open(os.path.join(tmp, f"{split}.parquet"), "rb") as src,
                    zf.open(f"{name}/data/{split}-00000-of-00001.parquet", "w", force_zip64=True) as dst,
                ):
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            zf.writestr(f"{name}/README.md", card)
    return {"sha256": sha, "count": sum(counts.values()), "splits": {s: counts.get(s, 0) for s in writers}}
