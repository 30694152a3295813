"""Read the weighted pool and the target set out of the store as plain rows.

The pool is every ``train`` row of the sources being weighed. The target is either a split (``--target val``: its
rows from every source) or a source (``--target NAME``: that source's ``val`` rows when it has any, else all its
rows), and a target source is left out of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _rows(con: duckdb.DuckDBPyConnection, where: str, args: list) -> Rows:
    got = con.execute(
        f"SELECT example_id, source, prompt, response FROM examples WHERE {where} ORDER BY source, example_id", args
    ).fetchall()
    return Rows([r[0] for r in got], [r[1] for r in got], [r[2] or "" for r in got], [r[3] or "" for r in got])


def load_pool_and_target(con: duckdb.DuckDBPyConnection, target: str) -> tuple[Rows, Rows]:
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
    if len(tgt) == 0:
        raise ConfigError(f"--target: no rows for {target!r}; ingest them first, e.g. `curate ingest val.jsonl "
                          f"--split {target if target in SPLIT_NAMES else 'val'}`")
    if len(set(pool.sources)) < 1:
        raise ConfigError("no training rows to weigh; ingest sources with --split train")
    return pool, tgt
