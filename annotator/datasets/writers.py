"""Streaming writers for materialised records: hash, split, JSONL, Parquet, Hugging Face folder zip.

Records go in as an iterable and bytes come out as they are produced; nothing holds the full list
(the zip writer spools each split to a temporary file on disk, not in memory). No Django here: the
web view wraps ``iter_jsonl_chunks`` in a StreamingHttpResponse, and the default worker writes a
snapshot's files in one pass with ``write_snapshot``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from json.encoder import c_make_encoder, encode_basestring
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from annotator.datasets.materialise import KINDS, arrow_schema

Record = dict[str, Any]


# sort_keys + fixed separators: the same record always gives the same bytes. One encoder object,
# made once: ``json.dumps`` with these arguments builds a new one per call, for the same output.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _canonical(record: Record) -> str:
    return _CANONICAL.encode(record)


def _canonical_encoder() -> Callable[[Record], str]:
    """``_canonical`` for one run of many records: ``JSONEncoder.encode`` sets up a new C encoder
    on every call (a fifth of its time for a small record); this one is set up once, with the same
    arguments ``_CANONICAL.iterencode`` passes it, so it writes the same bytes. Without the C
    encoder (another Python), ``_canonical`` itself. Use one per run: after an error, its record of
    the containers being encoded (for the circular-reference check) may be left part full."""
    if c_make_encoder is None:
        return _canonical
    c = _CANONICAL
    encoder = c_make_encoder(
        {},
        c.default,
        encode_basestring,
        c.indent,
        c.key_separator,
        c.item_separator,
        c.sort_keys,
        c.skipkeys,
        c.allow_nan,
    )

    def encode(record: Record) -> str:
        if isinstance(record, str):
            return encode_basestring(record)
        return "".join(encoder(record, 0))

    return encode


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


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain folder name")


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
    _check_name(name)

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

        sha = digest.hexdigest()
        _zip_folder(
            fileobj,
            {s: os.path.join(tmp, f"{s}.parquet") for s in writers},
            kind=kind,
            name=name,
            schema=schema,
            counts=counts,
            sha256=sha,
            seed=seed,
            eval_fraction=eval_fraction,
            license=license,
            provenance=provenance or {},
        )
    return {"sha256": sha, "count": sum(counts.values()), "splits": {s: counts.get(s, 0) for s in writers}}


def _zip_folder(
    fileobj: IO[bytes],
    split_files: dict[str, str | os.PathLike[str]],
    *,
    kind: str,
    name: str,
    schema: pa.Schema,
    counts: dict[str, int],
    sha256: str,
    seed: int,
    eval_fraction: float,
    license: str,
    provenance: dict[str, Any],
) -> None:
    """The zipped dataset folder: each split's Parquet file (copied in, 1 MiB at a time) and the card."""
    from datasets import Features, Image, List  # heavy import, only for the card's feature types

    features = Features.from_arrow_schema(schema)
    if "images" in schema.names:
        features["images"] = List(Image())
    card = _card(
        kind=kind,
        name=name,
        counts=counts,
        sizes={s: os.path.getsize(path) for s, path in split_files.items()},
        features_yaml=features._to_yaml_list(),
        sha256=sha256,
        seed=seed,
        eval_fraction=eval_fraction,
        license=license,
        provenance=provenance,
    )
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for split in sorted(split_files):
            with (
                open(split_files[split], "rb") as src,
                zf.open(f"{name}/data/{split}-00000-of-00001.parquet", "w", force_zip64=True) as dst,
            ):
                shutil.copyfileobj(src, dst, 1024 * 1024)
        zf.writestr(f"{name}/README.md", card)


# ---------------------------------------------------------------------------------------------
# A snapshot's files, in one pass

SNAPSHOT_BATCH = 10_000  # records per Parquet row group (and per hand-over to the writer thread)


def write_snapshot(
    records: Iterable[Record],
    *,
    jsonl: str | os.PathLike[str],
    parquet: str | os.PathLike[str],
    split_jsonl: dict[str, str | os.PathLike[str]],
    split_parquet: dict[str, str | os.PathLike[str]],
    hf_zip: str | os.PathLike[str],
    kind: str,
    name: str,
    seed: int = 0,
    eval_fraction: float = 0.1,
    provenance: dict[str, Any] | None = None,
    license: str = "other",
    batch_size: int = SNAPSHOT_BATCH,
) -> dict[str, Any]:
    """Write every file of a snapshot in one pass over ``records``: ``jsonl`` (all records),
    ``parquet``, one JSONL and one Parquet file per split (``SPLITS``) and the ``hf_zip`` folder of
    ``write_hf_zip``, with the same content as those functions write one by one.

    Each record gets its ``split`` (``with_split``) and is encoded to JSON once: its line of
    ``jsonl`` is its canonical JSON (``canonical_hash``), hashed as it is written, so the returned
    ``sha256`` is both the content hash and the sha256 of the ``jsonl`` file. Every
    ``batch_size`` lines go to a writer thread, which joins them into UTF-8 bytes, hashes them and
    appends them to the JSONL files (hashlib works off the GIL on a batch), and parses them into
    one Arrow table (in C++, off the GIL) for the Parquet files: memory holds a few batches,
    whatever the number of records. Returns ``{"sha256", "count", "splits": {split: n}}``
    as ``write_hf_zip`` does (every split in the zip: ``train`` always, ``eval`` when it has records).
    """
    _check_name(name)
    counts = dict.fromkeys(SPLITS, 0)
    splits_of: dict[Any, str] = {}  # prompt id → split: a prompt's records usually come together
    with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp:
        sink = _SnapshotSink(
            kind=kind, jsonl=jsonl, parquet=parquet, split_jsonl=split_jsonl, split_parquet=split_parquet,
            spool=tmp, batch_size=batch_size,
        )
        try:
            encode = _canonical_encoder()
            lines: list[str] = []
            by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
            for record in records:
                split = record.get("split")
                if "split" not in record:
                    prompt_id = record.get("prompt_id")
                    split = splits_of.get(prompt_id)
                    if split is None:
                        if len(splits_of) >= 10_000:  # bounded: memory must not grow with the corpus
                            splits_of.clear()
                        split = splits_of[prompt_id] = split_of(prompt_id, eval_fraction=eval_fraction, seed=seed)
                    record = {**record, "split": split}
                if split not in counts:
                    raise ValueError(f"record split {split!r} is not one of {', '.join(SPLITS)}")
                if not sink.started:
                    sink.start(with_images="images" in record)
                line = encode(record)
                counts[split] += 1
                lines.append(line)
                by_split[split].append(line)
                if len(lines) >= batch_size:
                    sink.put(lines, by_split)
                    lines, by_split = [], {s: [] for s in SPLITS}
            if not sink.started:  # empty export: empty files with the kind's columns
                sink.start(with_images=False)
            if lines:
                sink.put(lines, by_split)
            zip_splits = sink.close()
        except BaseException:
            sink.abort()
            raise
        sha = sink.digest.hexdigest()
        # As write_hf_zip: the zip holds the train split always, the eval split when it has records.
        in_zip = {s: path for s, path in zip_splits.items() if s == "train" or counts[s]}
        with open(hf_zip, "wb") as fh:
            _zip_folder(
                fh,
                in_zip,
                kind=kind,
                name=name,
                schema=sink.schema,
                counts={s: n for s, n in counts.items() if n},
                sha256=sha,
                seed=seed,
                eval_fraction=eval_fraction,
                license=license,
                provenance=provenance or {},
            )
    return {"sha256": sha, "count": sum(counts.values()), "splits": {s: counts[s] for s in in_zip}}


class _SnapshotSink:
    """The writer thread of ``write_snapshot``: JSON lines in, JSONL and Parquet files out.

    The producer hands over batches of lines (``put``: canonical JSON strings without their line
    ends); the thread hashes them (``digest``, in order: the sha256 of the JSONL file), writes them
    and turns each batch into an Arrow table with pyarrow's JSON reader and the kind's explicit schema (the same
    table ``pa.Table.from_pylist`` makes from the records). It always drains its queue until the
    end marker, also after an error, so the producer never blocks on a dead consumer; the error is
    raised in the producer at its next ``put`` or at ``close``."""

    def __init__(
        self,
        *,
        kind: str,
        jsonl: str | os.PathLike[str],
        parquet: str | os.PathLike[str],
        split_jsonl: dict[str, str | os.PathLike[str]],
        split_parquet: dict[str, str | os.PathLike[str]],
        spool: str,
        batch_size: int,
    ) -> None:
        self.kind, self.batch_size, self.spool = kind, batch_size, spool
        self.paths = (jsonl, parquet, split_jsonl, split_parquet)
        self.schema: pa.Schema | None = None
        self.started = False
        self.digest = hashlib.sha256()
        self._queue: queue.Queue[tuple[list[str], dict[str, list[str]]] | None] = queue.Queue(maxsize=3)
        self._error: BaseException | None = None
        self._files = contextlib.ExitStack()  # every file the thread writes; closed in close / abort
        self._thread: threading.Thread | None = None

    def start(self, *, with_images: bool) -> None:
        jsonl, parquet, split_jsonl, split_parquet = self.paths
        self.schema = arrow_schema(self.kind, with_images=with_images, with_split=True)
        self._parse = pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore")
        # In the zip, images travel as their bytes (datasets' Image storage), so it has its own files.
        self._zip_schema: pa.Schema | None = None
        if with_images:
            idx = self.schema.get_field_index("images")
            self._zip_schema = self.schema.set(idx, pa.field("images", pa.list_(_IMAGE_STRUCT)))
        self.started = True
        keep = self._files.enter_context
        # The ExitStack closes them (close / abort): they outlive this method, so no `with` here.
        self._jsonl = keep(open(jsonl, "wb"))  # noqa: SIM115
        self._split_jsonl = {s: keep(open(split_jsonl[s], "wb")) for s in SPLITS}  # noqa: SIM115
        self._parquet = keep(pq.ParquetWriter(os.fspath(parquet), self.schema))
        self._split_parquet = {s: keep(pq.ParquetWriter(os.fspath(split_parquet[s]), self.schema)) for s in SPLITS}
        self.zip_files: dict[str, str | os.PathLike[str]] = dict(split_parquet)
        self._zip_parquet: dict[str, pq.ParquetWriter] = {}
        if self._zip_schema is not None:
            self.zip_files = {s: os.path.join(self.spool, f"{s}.parquet") for s in SPLITS}
            self._zip_parquet = {s: keep(pq.ParquetWriter(self.zip_files[s], self._zip_schema)) for s in SPLITS}
        self._pending: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def put(self, lines: list[str], by_split: dict[str, list[str]]) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put((lines, by_split), timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as exc:  # handed to the producer; keep draining
                    self._error = exc

    def _write(self, lines: list[str], by_split: dict[str, list[str]]) -> None:
        blob = ("\n".join(lines) + "\n").encode("utf-8")
        self.digest.update(blob)
        self._jsonl.write(blob)
        for split, part in by_split.items():
            if part:
                self._split_jsonl[split].write(("\n".join(part) + "\n").encode("utf-8"))
        # One block for the whole batch: a line never straddles two blocks, however long it is.
        options = pj.ReadOptions(use_threads=False, block_size=len(blob) + 1)
        table = pj.read_json(io.BytesIO(blob), read_options=options, parse_options=self._parse)
        self._parquet.write_table(table)
        for split in SPLITS:
            if by_split[split]:
                self._pending[split].append(table.filter(pc.equal(table["split"], split)))
                if sum(t.num_rows for t in self._pending[split]) >= self.batch_size:
                    self._flush(split)

    def _flush(self, split: str) -> None:
        tables, self._pending[split] = self._pending[split], []
        if not tables:
            return
        table = pa.concat_tables(tables)
        self._split_parquet[split].write_table(table)
        if self._zip_schema is not None:
            paths = table["images"].to_pylist()
            embedded = pa.array(
                [[{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in ps] for ps in paths],
                type=pa.list_(_IMAGE_STRUCT),
            )
            idx = table.schema.get_field_index("images")
            self._zip_parquet[split].write_table(table.set_column(idx, self._zip_schema.field(idx), embedded))

    def close(self) -> dict[str, str | os.PathLike[str]]:
        """Wait for the thread, flush and close every file; raise the thread's error if it had one.
        Returns each split's Parquet file for the zip."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        for split in SPLITS:
            self._flush(split)
        self._files.close()  # a failing close (a full disk) fails the snapshot
        return self.zip_files

    def abort(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._error = self._error or RuntimeError("aborted")
            self._queue.put(None)
            self._thread.join()
        with contextlib.suppress(Exception):  # closing after a failure: the first error is the one that counts
            self._files.close()
