"""The DuckDB store: opening it safely, and the schema every command shares.

One file, no server. Opening maps DuckDB's failures to one-line errors: another process holding the lock, or a
file that is not a DuckDB database. Tables (DESIGN.md §4): ``examples``, ``rejects``, ``ingests`` (one ledger row per
ingested file, source and split; it makes re-ingesting a file a no-op), ``runs``, ``weights``, ``scores``,
``eval_results`` and ``meta`` (schema version). ``examples`` is a view over the stored ``example_rows`` that adds
``example_id``, ``text`` and ``messages``, derived from ``prompt``/``response`` (chat rows keep their full turns in
``chat_messages``); only ingest writes ``example_rows``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb

from curate.errors import DataError, LockError

SCHEMA_VERSION = 2

DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS example_rows (
    source VARCHAR NOT NULL, split VARCHAR NOT NULL,
    prompt VARCHAR, response VARCHAR, chat_messages VARCHAR,
    content_hash VARCHAR NOT NULL, n_chars BIGINT, origin VARCHAR, origin_row BIGINT
);
-- Derived columns are computed on read, so ingest writes each string once (and computes nothing else: DuckDB
-- evaluates a table's generated columns on insert, which cost ingest a third of its time). Ids are stable: the
-- same content in the same source and split always gets the same id.
CREATE VIEW IF NOT EXISTS examples AS SELECT *,
    md5(source || chr(31) || split || chr(31) || content_hash) AS example_id,
    CASE WHEN prompt = '' THEN response ELSE prompt || chr(10) || chr(10) || response END AS text,
    coalesce(chat_messages, CASE WHEN prompt = '' THEN NULL ELSE
        '[{"role":"user","content":' || to_json(prompt)::VARCHAR || '},{"role":"assistant","content":'
        || to_json(response)::VARCHAR || '}]' END) AS messages
FROM example_rows;
CREATE TABLE IF NOT EXISTS rejects (
    origin VARCHAR, origin_row BIGINT, source VARCHAR, split VARCHAR, reason VARCHAR, raw VARCHAR
);
CREATE TABLE IF NOT EXISTS ingests (
    file_sha256 VARCHAR, origin VARCHAR, default_source VARCHAR, source VARCHAR, split VARCHAR, schema VARCHAR,
    rows_read BIGINT, kept BIGINT, duplicates BIGINT, rejected BIGINT, ingested_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, method VARCHAR, config_json VARCHAR, status VARCHAR,
    created_at TIMESTAMP, finished_at TIMESTAMP, run_dir VARCHAR
);
CREATE TABLE IF NOT EXISTS weights (run_id VARCHAR, step BIGINT, source VARCHAR, weight DOUBLE);
CREATE TABLE IF NOT EXISTS scores (run_id VARCHAR, example_id VARCHAR, score DOUBLE);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id VARCHAR, method VARCHAR, seed BIGINT, metric VARCHAR, source VARCHAR, value DOUBLE
);
"""

STORED = "source, split, prompt, response, chat_messages, content_hash, n_chars, origin, origin_row"

_LOCK_PID = re.compile(r"PID (\d+)")


@contextlib.contextmanager
def open_db(path: Path | str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open (and, when writable, create or migrate) the store; always closes it.

    Raises:
        LockError: another process has the file open for writing.
        DataError: the file is not a DuckDB database, or a read-only open of a missing file.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise DataError(f"{path}: no such database; run `curate ingest FILE --db {path}` first")
    if path.exists() and path.is_dir():
        raise DataError(f"{path}: is a folder, not a DuckDB file; pass a file path to --db")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        msg = str(e)
        if "lock" in msg.lower():
            pid = _LOCK_PID.search(msg)
            who = f" (PID {pid.group(1)})" if pid else ""
            raise LockError(
                f"{path}: in use by another curate process{who}; wait for it to finish or use another --db"
            ) from None
        raise DataError(f"{path}: not a DuckDB database ({_first_line(msg)}); pass another --db") from None
    except (duckdb.Error, RuntimeError) as e:
        raise DataError(f"{path}: cannot open as DuckDB ({_first_line(str(e))}); pass another --db") from None
    try:
        if not read_only:
            _migrate(con, path)
        yield con
    finally:
        con.close()


def _first_line(msg: str) -> str:
    return msg.strip().splitlines()[0][:200] if msg.strip() else "unknown error"


def _migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = SCHEMA_VERSION if row is None else int(row[0])
    if version > SCHEMA_VERSION:
        raise DataError(f"{path}: written by a newer curate (schema {version}); upgrade curate")
    con.execute("BEGIN TRANSACTION")
    try:
        if version == 1:  # v1 kept examples as a table with generated columns; copy its rows under DDL's schema
            con.execute("ALTER TABLE examples RENAME TO examples_v1")
        con.execute(DDL)
        if version == 1:
            con.execute(f"INSERT INTO example_rows ({STORED}) SELECT {STORED} FROM examples_v1")
            con.execute("DROP TABLE examples_v1")
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def sources_in(con: duckdb.DuckDBPyConnection, split: str | None = None) -> dict[str, int]:
    """Number of stored examples per source (optionally for one split), sorted by source name."""
    if split is None:
        rows = con.execute("SELECT source, count(*) FROM examples GROUP BY 1 ORDER BY 1").fetchall()
    else:
        rows = con.execute(
            "SELECT source, count(*) FROM examples WHERE split = ? GROUP BY 1 ORDER BY 1", [split]
        ).fetchall()
    return {s: int(n) for s, n in rows}


def data_fingerprint(con: duckdb.DuckDBPyConnection, sources: list[str] | None = None) -> str:
    """A content fingerprint of the stored examples (per source and split), stable across re-ingests."""
    where, args = ("WHERE source IN (SELECT unnest(?))", [sources]) if sources else ("", [])
    row = con.execute(
        f"""SELECT md5(coalesce(string_agg(part, ';' ORDER BY part), '')) FROM (
              SELECT source || '/' || split || ':' || md5(string_agg(content_hash, ',' ORDER BY content_hash)) AS part
              FROM examples {where} GROUP BY source, split)""",
        args,
    ).fetchone()
    return str(row[0]) if row else ""
