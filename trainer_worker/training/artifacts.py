"""Files a training run needs beyond what the trainer writes itself (no Django).

- ``concat_parquet``: one dataset file from the Parquet files of several snapshots of one kind.
- ``merge_adapter``: a full checkpoint of base + LoRA adapter, for backends that load full
  checkpoints only (the local one); vLLM loads the adapter itself.
"""

from __future__ import annotations

from pathlib import Path


def concat_parquet(paths: list[Path], out: Path) -> Path:
    """The rows of every file in ``paths``, in order, as one Parquet file at ``out`` (a single file
    is returned as it is). Columns missing from some files are filled with nulls."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"snapshot files missing: {', '.join(missing)}")
    if len(paths) == 1:
        return Path(paths[0])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default"), out)
    return out


def merge_adapter(adapter: Path, out: Path) -> Path:
    """Merge the LoRA adapter folder ``adapter`` into its base model and save the result (with the
    adapter's tokenizer) at ``out``. Done once: an existing merged folder is kept."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if not (out / "config.json").exists():
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).merge_and_unload()
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    return out
