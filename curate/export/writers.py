"""Write exported shards in a layout the Hub and ``datasets.load_dataset(folder)`` understand.

One shard per data part of the run (the resampler closes a part at ~256 MB), each written row group by row group:

- ``parquet``: ``data/train-00000-of-0000N.parquet``
- ``jsonl``:   ``data/train-00000-of-0000N.jsonl``
- ``hf``: a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json``, ``train/data-0000i-of-0000N.arrow``
  plus ``train/state.json`` and ``train/dataset_info.json``), so ``load_from_disk(folder)`` works; the card's
  ``configs`` points ``load_dataset(folder)`` at the same Arrow shards: both readers see one copy of the data.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SPLIT = "train"
FORMATS = ("parquet", "jsonl", "hf")
# Glob (relative to the export folder) that the card's `configs` gives `load_dataset` for each format.
DATA_GLOBS = {
    "parquet": f"data/{SPLIT}-*.parquet",
    "jsonl": f"data/{SPLIT}-*.jsonl",
    "hf": f"{SPLIT}/data-*.arrow",
}
# Text rows are a few KB: ~10k rows keeps row groups small enough for streaming readers and the Hub viewer.
ROW_GROUP_SIZE = 10_000
HF_SHARD_BYTES = 500 * 1024 * 1024
"""The most Arrow bytes one ``hf`` shard holds (``datasets``' own ``max_shard_size`` default)."""


def _shard_name(i: int, n: int, ext: str) -> str:
    return f"{SPLIT}-{i:05d}-of-{n:05d}.{ext}"


Parts = Iterable[Iterable[pa.Table]]
"""What every writer takes: one stream of tables (row groups) per shard, so no shard is ever held in memory whole."""


def write_parquet(parts: Parts, out: Path, n_shards: int, schema: pa.Schema) -> list[Path]:
    """One Parquet shard per part under ``out/data``, written row group by row group."""
    paths = []
    for i, tables in enumerate(parts):
        path = out / "data" / _shard_name(i, n_shards, "parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, schema) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        paths.append(path)
    return paths


def write_jsonl(parts: Parts, out: Path, n_shards: int, schema: pa.Schema) -> list[Path]:
    """One JSON Lines shard per part under ``out/data``; nested ``messages`` stay JSON arrays of objects."""
    import polars as pl

    paths = []
    for i, tables in enumerate(parts):
        path = out / "data" / _shard_name(i, n_shards, "jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for table in tables:
                pl.DataFrame(table).write_ndjson(f)
        paths.append(path)
    return paths


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' progress bars (library code prints nothing) and restore the caller's setting."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def write_hf(parts: Parts, out: Path, n_shards: int, schema: pa.Schema) -> list[Path]:
    """A ``save_to_disk`` folder with split ``train`` in at least ``n_shards`` Arrow shards (more when a shard would
    pass :data:`HF_SHARD_BYTES`), so neither the folder nor a Hub upload of it is ever one giant file.

    Each part is staged as a memory-mapped Arrow file, row group by row group, so the whole dataset never sits in
    memory at once.
    """
    import datasets

    stage = out / ".stage"
    stage.mkdir()
    staged, nbytes = [], 0
    for i, tables in enumerate(parts):
        path = stage / f"{i:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for table in tables:
                writer.write_table(table)
                nbytes += table.nbytes
        staged.append(path)
    shards = max(n_shards, math.ceil(nbytes / HF_SHARD_BYTES))
    with _quiet_datasets():
        ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in staged])
        datasets.DatasetDict({SPLIT: ds}).save_to_disk(str(out), num_shards={SPLIT: shards})
    del ds
    shutil.rmtree(stage)
    return sorted((out / SPLIT).glob("data-*.arrow"))


WRITERS = {"parquet": write_parquet, "jsonl": write_jsonl, "hf": write_hf}
