"""Read the weighted pool and the target set out of the store as plain rows.

The pool is every ``train`` row of the sources being weighed. The target is either a split (``--target val``: its
rows from every source) or a source (``--target NAME``: that source's ``val`` rows when it has any, else all its
rows), and a target source is left out of the pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from curate.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Rows:
    """Plain columns of stored examples."""

    example_ids: list[str]
    sources: list[str]
    prompts: list[str]
    responses: list[str]

    def __len__(self) -> int:
        return len(self.example_ids)


@dataclass
class RunData:
    """What a reweight run reads from the store: the pool, the target, rows per source and a fingerprint."""

    pool: Rows
    target: Rows
    counts: dict[str, int]
    fingerprint: str

    @property
    def sources(self) -> list[str]:
        return sorted(self.counts)


def _rows(con: duckdb.DuckDBPyConnection, where: str, args: list) -> Rows:
    got = con.execute(
        f"SELECT example_id, source, prompt, response FROM examples WHERE {where} ORDER BY source, example_id", args
    ).fetchall()
    return Rows([r[0] for r in got], [r[1] for r in got], [r[2] or "" for r in got], [r[3] or "" for r in got])


def load_split(con: duckdb.DuckDBPyConnection, split: str) -> Rows:
    """Every stored row of ``split`` (all sources), ordered by source and id."""
    return _rows(con, "split = ?", [split])


def read_parquet_rows(files: Sequence[Path]) -> Rows:
    """The rows of resampled Parquet parts (a run's ``data/``), in file order, duplicates (repeats) kept."""
    import pyarrow.parquet as pq

    cols: dict[str, list] = {"example_id": [], "source": [], "prompt": [], "response": []}
    for f in files:
        part = pq.read_table(f, columns=list(cols)).to_pydict()
        for k in cols:
            cols[k] += part[k]
    return Rows(cols["example_id"], cols["source"], [p or "" for p in cols["prompt"]],
                [r or "" for r in cols["response"]])


def load_run_data(db: Path, target: str, *, need_target: bool = True) -> RunData:
    """Read a run's pool and target (:func:`load_pool_and_target`) with a read-only connection, released after.

    With ``need_target=False`` (a method that does not use the target) a target split with no rows is allowed;
    a ``--target`` that names nothing is refused either way.
    """
    from curate.db import data_fingerprint, open_db

    with open_db(db, read_only=True) as con:
        pool, tgt = load_pool_and_target(con, target, allow_empty_target=not need_target)
        counts = Counter(pool.sources)  # one pass over the pool, not one per source
        fingerprint = data_fingerprint(con, sorted(counts))
    return RunData(pool, tgt, {s: counts[s] for s in sorted(counts)}, fingerprint)


def load_pool_and_target(con: duckdb.DuckDBPyConnection, target: str,
                         allow_empty_target: bool = False) -> tuple[Rows, Rows]:
    """The pool (train rows of the weighed sources) and the target rows for ``--target``.

    Raises:
        ConfigError: the target names neither a split with rows nor a source, or the pool has < 2 sources.
    """
    sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM examples ORDER BY 1").fetchall()]
    if target in SPLIT_NAMES:
        tgt = _rows(con, "split = ?", [target])
        pool = _rows(con, "split = 'train'", [])
    elif target in sources:
        has_val = con.execute("SELECT count(*) FROM examples WHERE source = ? AND split = 'val'", [target]).fetchone()
        tgt = _rows(con, "source = ? AND split = 'val'", [target]) if has_val and has_val[0] else _rows(
            con, "source = ?", [target])
        pool = _rows(con, "split = 'train' AND source <> ?", [target])
    else:
        raise ConfigError(f"--target: {target!r} is neither a split (train, val, test) nor a source "
                          f"({', '.join(sources) or 'none stored'}); ingest a target set with --split val")
    if len(tgt) == 0 and not allow_empty_target:
        raise ConfigError(f"--target: no rows for {target!r}; ingest them first, e.g. `curate ingest val.jsonl "
                          f"--split {target if target in SPLIT_NAMES else 'val'}`")
    if len(set(pool.sources)) < 1:
        raise ConfigError("no training rows to weigh; ingest sources with --split train")
    return pool, tgt
