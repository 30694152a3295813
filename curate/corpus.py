"""Read the weighted pool and the target set out of the store as plain rows.

The pool is every ``train`` row of the sources being weighed. The target is either a split (``--target val``: its
rows from every source) or a source (``--target NAME``: that source's ``val`` rows when it has any, else all its
rows), and a target source is left out of the pool.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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

    def take(self, idx: Sequence[int]) -> Rows:
        """The rows at positions ``idx``, in that order."""
        return Rows([self.example_ids[i] for i in idx], [self.sources[i] for i in idx],
                    [self.prompts[i] for i in idx], [self.responses[i] for i in idx])

    def sample(self, n: int, seed: int = 0) -> Rows:
        """At most ``n`` rows drawn without replacement (seeded), in pool order; all of them when there are fewer."""
        return self if n >= len(self) else self.take(sample_positions(len(self), n, seed))


def sample_positions(total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` of ``range(total)``, seeded, sorted: the one sample every pool representation draws."""
    return sorted(random.Random(seed).sample(range(total), n))


class PoolLike(Protocol):
    """What a method reads from the pool: :class:`Rows` in memory, or a :class:`curate.snapshot.PoolSnapshot`."""

    def __len__(self) -> int: ...
    def take(self, idx: Sequence[int]) -> Rows: ...
    def sample(self, n: int, seed: int = 0) -> Rows: ...


STREAM_ABOVE = 100_000
"""Pools with more rows than this are streamed (:mod:`curate.snapshot`, :mod:`solvers.stream`) rather than held
in memory: 100,000 rows of 128 tokens already cost ~0.5 GB as token lists."""


@dataclass
class RunData:
    """What a reweight run reads from the store: the pool, the target, rows per source and a fingerprint."""

    pool: PoolLike | None
    """None when the method reads no text (uniform, temperature, ...: counts are all they use)."""
    target: Rows
    counts: dict[str, int]
    """Rows per weighed unit: per source, or with ``group_by`` per group (``source/cNN``)."""
    fingerprint: str
    group_source: dict[str, str] | None = None
    """With ``group_by``: each group's source (a source that was not clustered is its own group)."""

    @property
    def sources(self) -> list[str]:
        return sorted(self.counts)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Release a streamed pool's snapshot (nothing to do for one in memory)."""
        close = getattr(self.pool, "close", None)
        if close is not None:
            close()


def _rows(con: duckdb.DuckDBPyConnection, where: str, args: list, source: str = "source",
          table: str = "examples") -> Rows:
    got = con.execute(
        f"SELECT example_id, {source} AS source, prompt, response FROM {table} WHERE {where} "
        "ORDER BY 2, example_id", args).fetchall()
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


def load_run_data(db: Path, target: str, *, need_target: bool = True, need_text: bool = True,
                  stream_above: int = STREAM_ABOVE, group_by: str | None = None) -> RunData:
    """Read a run's pool and target with a read-only connection, released after.

    The pool's text is read only when the method needs it (``need_text``); above ``stream_above`` rows it is
    streamed into a :class:`curate.snapshot.PoolSnapshot` beside the store instead of Python lists (call
    :meth:`RunData.close` when done). With ``need_target=False`` (a method that does not use the target) a target
    split with no rows is allowed; a ``--target`` that names nothing is refused either way. ``group_by`` names a
    grouping made by ``curate cluster``: the pool's rows are then labelled by group (``source/cNN``) instead of by
    source, so every method weighs groups.
    """
    from curate.db import data_fingerprint, open_db

    with open_db(db, read_only=True) as con:
        where, args, tgt = pool_query(con, target, allow_empty_target=not need_target)
        label, table, fp_extra = ("source", "examples", "") if group_by is None else _grouped(con, group_by)
        pairs = con.execute(f"SELECT {label}, source, count(*) FROM {table} WHERE {where} GROUP BY 1, 2 ORDER BY 1",
                            args).fetchall()
        counts = {unit: int(n) for unit, _, n in pairs}
        fingerprint = data_fingerprint(con, sorted({s for _, s, _ in pairs})) + fp_extra
        pool: PoolLike | None = None
        if need_text and sum(counts.values()) > stream_above:
            from curate.snapshot import PoolSnapshot

            pool = PoolSnapshot.write(con, where, args, Path(db).resolve().parent, counts, label, table)
        elif need_text:
            pool = _rows(con, where, args, label, table)
    groups = {unit: s for unit, s, _ in pairs} if group_by is not None else None
    return RunData(pool, tgt, counts, fingerprint, groups)


def _grouped(con: duckdb.DuckDBPyConnection, name: str) -> tuple[str, str, str]:
    """``--group-by NAME``: the label column, the relation and a fingerprint suffix; refuses a grouping that does
    not exist or whose sources changed since it was made."""
    from curate.cluster.store import group_of_sql, grouping_settings, is_current

    settings = grouping_settings(con, name)
    if settings is None:
        raise ConfigError(f"--group-by: no grouping {name!r} in this store; make it with `curate cluster --k K "
                          f"--name {name}`")
    if not is_current(con, name):
        raise ConfigError(f"--group-by: the sources of grouping {name!r} changed since it was made; re-run "
                          f"`curate cluster --k {settings.get('k', 'K')} --name {name}`")
    return "grp", f"({group_of_sql(name)})", f":group_by={name}:{settings.get('fingerprint', '')}"


def pool_query(con: duckdb.DuckDBPyConnection, target: str,
               allow_empty_target: bool = False) -> tuple[str, list[Any], Rows]:
    """The pool's ``WHERE`` clause (train rows of the weighed sources) and arguments, and the target rows.

    Raises:
        ConfigError: the target names neither a split with rows nor a source, or the pool has no rows.
    """
    sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM examples ORDER BY 1").fetchall()]
    where, args = "split = 'train'", []
    if target in SPLIT_NAMES:
        tgt = _rows(con, "split = ?", [target])
    elif target in sources:
        has_val = con.execute("SELECT count(*) FROM examples WHERE source = ? AND split = 'val'", [target]).fetchone()
        tgt = _rows(con, "source = ? AND split = 'val'", [target]) if has_val and has_val[0] else _rows(
            con, "source = ?", [target])
        where, args = "split = 'train' AND source <> ?", [target]
    else:
        raise ConfigError(f"--target: {target!r} is neither a split (train, val, test) nor a source "
                          f"({', '.join(sources) or 'none stored'}); ingest a target set with --split val")
    if len(tgt) == 0 and not allow_empty_target:
        raise ConfigError(f"--target: no rows for {target!r}; ingest them first, e.g. `curate ingest val.jsonl "
                          f"--split {target if target in SPLIT_NAMES else 'val'}`")
    found = con.execute(f"SELECT count(*) FROM examples WHERE {where}", args).fetchone()
    if not found or not found[0]:
        raise ConfigError("no training rows to weigh; ingest sources with --split train")
    return where, args, tgt
