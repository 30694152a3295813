"""The ``groups`` and ``groupings`` tables: named clusterings of train rows, and how a consumer reads them.

``curate cluster`` writes both (created here with ``CREATE TABLE IF NOT EXISTS``; ``curate/db.py`` does not know
them, so a store that was never clustered has neither):

- ``groups(example_id VARCHAR, grouping VARCHAR, grp VARCHAR)``: one row per clustered ``train`` row; ``grp`` is
  ``"{source}/c{NN}"`` (``web/c03``). Rows of sources the grouping did not choose have no row.
- ``groupings(name VARCHAR PRIMARY KEY, settings_json VARCHAR, created_at TIMESTAMP)``: what made each grouping
  (k, sources, embedder, joint, seed, niter, max_chars, and the chosen sources' ``data_fingerprint``).

A grouping is replaced whole in one transaction (:func:`write_grouping`): a failure or Ctrl-C leaves the old one.

For a consumer such as ``reweight --group-by NAME``::

    settings = grouping_settings(con, name)        # None: no grouping of that name (or never clustered)
    if not is_current(con, name): ...              # the chosen sources changed since; ask to re-run cluster
    rows = con.execute(f"SELECT example_id, grp FROM ({group_of_sql(name)}) WHERE split = 'train'").fetchall()

:func:`group_of_sql` is every column of ``examples`` plus ``grp = coalesce(g.grp, e.source)``, so a row of a
source that was not clustered is labelled with its plain source name.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from curate.db import data_fingerprint, is_interrupt
from curate.errors import Interrupted

DDL = """
CREATE TABLE IF NOT EXISTS groups (example_id VARCHAR, grouping VARCHAR, grp VARCHAR);
CREATE TABLE IF NOT EXISTS groupings (name VARCHAR PRIMARY KEY, settings_json VARCHAR, created_at TIMESTAMP);
"""


def group_of_sql(grouping: str) -> str:
    """A ``SELECT`` over ``examples`` (alias ``e``) adding ``grp``: the row's group in ``grouping``, else its source.

    Use it as a subquery (``FROM ({group_of_sql(name)}) x``); the name is quoted as a SQL literal here. Needs the
    ``groups`` table: check :func:`grouping_settings` first.
    """
    literal = "'" + grouping.replace("'", "''") + "'"
    return ("SELECT e.*, coalesce(g.grp, e.source) AS grp FROM examples e "
            f"LEFT JOIN groups g ON g.example_id = e.example_id AND g.grouping = {literal}")


def grouping_settings(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    """The settings a grouping was made with, or None when there is no such grouping (or no ``groupings`` table,
    so a read-only connection to a store that was never clustered works)."""
    if not _has_tables(con):
        return None
    row = con.execute("SELECT settings_json FROM groupings WHERE name = ?", [name]).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def is_current(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when the grouping exists and its sources hold the same rows as when it was made (a re-ingest or drop
    since then leaves new rows unlabelled and old labels pointing at nothing)."""
    settings = grouping_settings(con, name)
    return settings is not None and settings.get("fingerprint") == data_fingerprint(con, settings["sources"])


def write_grouping(con: duckdb.DuckDBPyConnection, name: str, example_ids: pa.Array, codes: pa.Array,
                   labels: list[str], settings: dict[str, Any]) -> None:
    """Replace grouping ``name`` by these rows and settings, all in one transaction.

    ``codes[i]`` indexes ``labels`` for ``example_ids[i]``; the pair is registered with DuckDB as one Arrow table
    (a dictionary column), so nothing is inserted row by row.

    Raises:
        Interrupted: Ctrl-C during the write; nothing changed.
    """
    table = pa.table({"example_id": example_ids,
                      "grp": pa.DictionaryArray.from_arrays(codes, pa.array(labels, pa.string()))})
    con.complete()  # DuckDB 2 registers nothing while a caller's result (say a fetchone) is still open
    con.register("_curate_new_groups", table)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(DDL)
        con.execute("DELETE FROM groups WHERE grouping = ?", [name])
        _insert_rows(con, name)
        con.execute("INSERT OR REPLACE INTO groupings VALUES (?, ?, now()::TIMESTAMP)",
                    [name, json.dumps(settings, sort_keys=True)])
        con.execute("COMMIT")
    except BaseException as e:
        con.execute("ROLLBACK")
        if isinstance(e, KeyboardInterrupt) or is_interrupt(e):
            raise Interrupted(f"nothing was written; grouping {name!r} is as it was") from None
        raise
    finally:
        con.unregister("_curate_new_groups")


def _insert_rows(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute("INSERT INTO groups SELECT example_id, ?, grp FROM _curate_new_groups", [name])


def _has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('groups', 'groupings') "
                      "AND schema_name = current_schema()").fetchone()
    return row is not None and row[0] == 2
