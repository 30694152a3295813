"""A large pool as an Arrow file on disk: what a model-based method reads rows from while it trains.

A pool above ``stream_above`` rows is not read into Python lists. DuckDB streams it, in the order of the in-memory
path (source, example id), into an Arrow IPC file of small record batches in a private temp folder beside the
store; a batch's rows are read from it (the page cache) record batch by record batch, so the process's own memory
does not grow with the pool. (Memory-mapping it would not: the kernel maps the neighbours of every page touched,
and a random draw touches the whole file.) The snapshot is a consistent copy: the store can be ingested into while
a long run trains. It is removed when the run ends (:meth:`PoolSnapshot.close`, also on interpreter exit); a
folder left by a killed run is named ``.curate-pool-*`` and is safe to delete.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.corpus import Rows, sample_positions

BATCH_ROWS = 1_024
"""Rows per Arrow record batch, the unit read from the file: a batch of a method reads one record batch per row
drawn (about 0.5 MB each at Alpaca's lengths) and keeps none, so the process holds no more than that."""


SORT_MEMORY = "256MB"
"""DuckDB's buffer while it sorts the pool into the snapshot (the connection is closed right after)."""


class PoolSnapshot:
    """The pool's ``example_id, source, prompt, response`` columns on disk; see the module docstring.

    It answers what the in-memory :class:`curate.corpus.Rows` does for a method (``len``, :meth:`take`,
    :meth:`sample`), never all rows at once.
    """

    def __init__(self, path: Path, counts: dict[str, int]) -> None:
        self.path, self.counts = path, dict(counts)
        self._file = pa.OSFile(str(path))
        self._reader = pa.ipc.open_file(self._file)
        self.starts = np.cumsum([0] + [self._reader.get_batch(i).num_rows
                                       for i in range(self._reader.num_record_batches)])
        self._finalizer = weakref.finalize(self, _remove, path.parent, self._file)

    @classmethod
    def write(cls, con: duckdb.DuckDBPyConnection, where: str, args: list[Any], directory: Path,
              counts: dict[str, int], source: str = "source", table: str = "examples") -> PoolSnapshot:
        """Stream ``table WHERE where`` (ordered by ``source``, the weighed unit, and id) into a new snapshot under
        ``directory``."""
        folder = Path(tempfile.mkdtemp(prefix=".curate-pool-", dir=directory))
        path = folder / "pool.arrow"
        try:  # the sort spills beyond SORT_MEMORY, so this step's memory does not grow with the pool
            con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
            query = (f"SELECT example_id, {source} AS source, coalesce(prompt, '') AS prompt, "
                     f"coalesce(response, '') AS response FROM {table} WHERE {where} ORDER BY 2, example_id")
            reader = con.cursor().sql(query, params=args).to_arrow_reader(BATCH_ROWS)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
                for batch in reader:
                    for start in range(0, batch.num_rows, BATCH_ROWS):
                        writer.write_batch(batch.slice(start, BATCH_ROWS))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(path, counts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def columns(self, idx: Sequence[int] | np.ndarray, names: Sequence[str]) -> dict[str, list[Any]]:
        """Columns ``names`` of rows ``idx`` (in that order), gathered record batch by record batch: only the pages
        of the rows asked for are read (a ``take`` over the whole table would first concatenate every batch)."""
        idx = np.asarray(idx, dtype=np.int64)
        out: dict[str, list[Any]] = {n: [None] * len(idx) for n in names}
        chunk = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(chunk):
            at = np.flatnonzero(chunk == k)
            part = self._reader.get_batch(int(k)).select(list(names)).take(pa.array(idx[at] - self.starts[k]))
            for n in names:
                col = out[n]
                for j, v in zip(at.tolist(), part.column(n).to_pylist(), strict=True):
                    col[j] = v
        return out

    def take(self, idx: Sequence[int] | np.ndarray) -> Rows:
        """The rows at positions ``idx`` (in that order) as plain :class:`Rows`."""
        got = self.columns(idx, ("example_id", "source", "prompt", "response"))
        return Rows(got["example_id"], got["source"], got["prompt"], got["response"])

    def texts(self, idx: np.ndarray) -> tuple[list[str], list[str]]:
        """Prompts and responses of rows ``idx``: the ``fetch`` of :class:`solvers.stream.StreamedSet`."""
        got = self.columns(idx, ("prompt", "response"))
        return got["prompt"], got["response"]

    def ids(self, idx: np.ndarray) -> list[str]:
        """Example ids of rows ``idx``."""
        return self.columns(idx, ("example_id",))["example_id"]

    def source_codes(self, sources: list[str]) -> np.ndarray:
        """Each row's index in ``sources`` (rows of a source not listed get 0, as the in-memory path does)."""
        import pyarrow.compute as pc

        value_set = pa.array(sources)
        out = np.zeros(len(self), dtype=np.int32)  # filled in place: no per-batch copies to concatenate
        for k, b in enumerate(self._batches()):
            out[self.starts[k]:self.starts[k + 1]] = pc.fill_null(
                pc.index_in(b.column("source"), value_set=value_set), 0).to_numpy(zero_copy_only=False)
        return out

    def sample(self, n: int, seed: int = 0) -> Rows:
        """At most ``n`` rows drawn without replacement (seeded), in pool order; every row when the pool is
        smaller."""
        return self.take(np.arange(len(self)) if n >= len(self) else sample_positions(len(self), n, seed))

    def close(self) -> None:
        """Close and delete the snapshot (idempotent)."""
        self._finalizer()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for i in range(self._reader.num_record_batches):
            yield self._reader.get_batch(i)


def _remove(folder: Path, file: Any) -> None:
    try:
        file.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
