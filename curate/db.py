"""The DuckDB store: opening it safely, and the schema every command shares.

One file, no server. Opening maps DuckDB's failures to one-line errors: another process holding the lock, or a
file that is not a DuckDB database. Tables (DESIGN.md §4): ``examples``, ``rejects``, ``ingests`` (one ledger row per
ingested file, source and split; it makes re-ingesting a file a no-op), ``runs``, ``weights``, ``scores``,
``eval_results`` and ``meta`` (schema version). ``examples`` is a view over the stored ``example_rows`` that adds
``example_id``, ``text`` and ``messages``, derived from ``prompt``/``response`` (chat rows keep their full turns in
``chat_messages``); only ingest writes ``example_rows``. Every stored row and reject carries the ``ingest_id`` of the
ledger entry that brought it, so one file's contribution can be removed exactly (``curate drop``).

An aborted write transaction (Ctrl-C, a failed file, kill -9) leaves the blocks DuckDB wrote optimistically at the
end of the file; :func:`compact` gives them back, and a writable open does it when the file is larger than its
blocks.

Every open caps DuckDB's buffer (:func:`memory_limit`: ``min(2 GB, half of RAM)``, or ``CURATE_DUCKDB_MEMORY``) and
gives it a spill folder next to the store (``<db>.tmp``), so an ingest or a big query's peak memory is bounded by that
cap, not by the size of the pool: DuckDB writes what does not fit to disk instead of taking the machine's memory.
Spill files that a killed process left there are removed by the next open (:func:`remove_stale_spill`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb

from curate.errors import ConfigError, DataError, LockError

SCHEMA_VERSION = 3

DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS example_rows (
    source VARCHAR NOT NULL, split VARCHAR NOT NULL,
    prompt VARCHAR, response VARCHAR, chat_messages VARCHAR,
    content_hash VARCHAR NOT NULL, n_chars BIGINT, origin VARCHAR, origin_row BIGINT, ingest_id BIGINT
);
-- Derived columns are computed on read, so ingest writes each string once (and computes nothing else: DuckDB
-- evaluates a table's generated columns on insert, which cost ingest a third of its time). Ids are stable: the
-- same content in the same source and split always gets the same id.
CREATE VIEW IF NOT EXISTS examples AS SELECT * EXCLUDE (ingest_id),
    md5(source || chr(31) || split || chr(31) || content_hash) AS example_id,
    CASE WHEN prompt = '' THEN response ELSE prompt || chr(10) || chr(10) || response END AS text,
    coalesce(chat_messages, CASE WHEN prompt = '' THEN NULL ELSE
        '[{"role":"user","content":' || to_json(prompt)::VARCHAR || '},{"role":"assistant","content":'
        || to_json(response)::VARCHAR || '}]' END) AS messages
FROM example_rows;
CREATE TABLE IF NOT EXISTS rejects (
    origin VARCHAR, origin_row BIGINT, source VARCHAR, split VARCHAR, reason VARCHAR, raw VARCHAR, ingest_id BIGINT
);
-- One row per (ingested file, source, split). An ingest is (file_sha256, default_source, split); path is the
-- absolute path, max_chars the --max-chars it ran with, file_rows the rows read from the whole file (all its rows).
CREATE TABLE IF NOT EXISTS ingests (
    file_sha256 VARCHAR, origin VARCHAR, default_source VARCHAR, source VARCHAR, split VARCHAR, schema VARCHAR,
    rows_read BIGINT, kept BIGINT, duplicates BIGINT, rejected BIGINT, ingested_at TIMESTAMP,
    ingest_id BIGINT, path VARCHAR, max_chars BIGINT, file_rows BIGINT
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

# v2 -> v3: the ledger learns ingest ids, paths, --max-chars and file row counts; rows and rejects their ingest id.
# Old rows get the id of the ledger entry with their origin, source and split (the latest one when several match).
V3_COLUMNS = """
ALTER TABLE example_rows ADD COLUMN IF NOT EXISTS ingest_id BIGINT;
ALTER TABLE rejects ADD COLUMN IF NOT EXISTS ingest_id BIGINT;
ALTER TABLE ingests ADD COLUMN IF NOT EXISTS ingest_id BIGINT;
ALTER TABLE ingests ADD COLUMN IF NOT EXISTS path VARCHAR;
ALTER TABLE ingests ADD COLUMN IF NOT EXISTS max_chars BIGINT;
ALTER TABLE ingests ADD COLUMN IF NOT EXISTS file_rows BIGINT;
"""
V3_BACKFILL = """
UPDATE ingests SET ingest_id = g.id, file_rows = g.n FROM (
    SELECT file_sha256, default_source, split, sum(rows_read) AS n,
           row_number() OVER (ORDER BY min(ingested_at), file_sha256, default_source, split) AS id
    FROM ingests GROUP BY file_sha256, default_source, split) g
WHERE ingests.ingest_id IS NULL AND g.file_sha256 = ingests.file_sha256
  AND g.default_source = ingests.default_source AND g.split = ingests.split;
UPDATE example_rows SET ingest_id = l.id FROM (
    SELECT origin, source, split, max(ingest_id) AS id FROM ingests GROUP BY origin, source, split) l
WHERE example_rows.ingest_id IS NULL AND l.origin = example_rows.origin AND l.source = example_rows.source
  AND l.split = example_rows.split;
UPDATE rejects SET ingest_id = l.id FROM (
    SELECT origin, source, split, max(ingest_id) AS id FROM ingests GROUP BY origin, source, split) l
WHERE rejects.ingest_id IS NULL AND l.origin = rejects.origin AND l.source = rejects.source
  AND l.split = rejects.split;
"""

_LOCK_PID = re.compile(r"PID (\d+)")

MEMORY_ENV = "CURATE_DUCKDB_MEMORY"
_DEFAULT_CAP = 2 * 1000**3
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*", re.IGNORECASE)


def memory_limit() -> str:
    """DuckDB's ``memory_limit`` for curate's connections, e.g. ``'2000MB'``.

    DuckDB's own default is 80% of RAM, which on a shared machine lets one big ingest take the memory other
    processes (a training run, a tokenizer) need; a fixed cap plus a spill folder keeps ingest's RSS flat as the
    pool grows. ``CURATE_DUCKDB_MEMORY`` (``512MB``, ``4GB``...) overrides the default ``min(2 GB, RAM / 2)``.

    Raises:
        ConfigError: the environment variable is not a size.
    """
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return f"{min(_DEFAULT_CAP, _ram_bytes() // 2) // 1000**2}MB"
    m = _SIZE.fullmatch(raw)
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"{MEMORY_ENV}={raw!r}: not a memory size; set it like 512MB or 4GB (or unset it)")
    return f"{m.group(1)}{(m.group(2) or 'B').upper()}"


def spill_dir(path: Path) -> Path:
    """Where DuckDB spills what does not fit in :func:`memory_limit`: a folder beside the store, same disk."""
    return path.with_name(path.name + ".tmp")


_SPILL_FILE = re.compile(r"duckdb_temp_(\d+)_")


def remove_stale_spill(path: Path) -> list[Path]:
    """Delete the spill files a killed process left in ``<db>.tmp``; returns them.

    DuckDB removes its spill files when it closes, not when it is killed (``kill -9``, the OOM killer), and never
    looks at another process's: each stale file stayed on the disk for good. Its name carries the process id that
    wrote it, so a file is removed only when that process is gone (another curate reading the same store spills
    into the same folder).
    """
    folder = spill_dir(path)
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _SPILL_FILE.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            (folder / name).unlink()
            removed.append(folder / name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2 * _DEFAULT_CAP


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
    if not read_only and not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist; create it (mkdir -p {path.parent}) or pass "
                        "another --db")
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit(), "temp_directory": str(spill_dir(path))}
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=config)
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
    remove_stale_spill(path)
    try:
        if not read_only:
            _migrate(con, path)
            if is_bloated(con, path):
                compact(con)
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def removed_if_left_empty(path: Path | str) -> Iterator[None]:
    """Delete a store this block created when the block fails before anything was ingested into it.

    A mistyped file or flag on the first ``curate ingest`` should not leave an empty ``curate.duckdb`` behind.
    """
    path = Path(path)
    created = not path.exists()
    try:
        yield
    except BaseException:
        if created and path.is_file() and _has_no_ingests(path):
            for p in (path, path.with_name(path.name + ".wal")):
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                spill_dir(path).rmdir()  # only when empty: DuckDB removes its own spill files on close
        raise


def _has_no_ingests(path: Path) -> bool:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except (duckdb.Error, RuntimeError):
        return False
    try:
        row = con.execute("SELECT count(*) FROM ingests").fetchone()
        return row is not None and not row[0]
    except duckdb.Error:
        return False
    finally:
        con.close()


def is_interrupt(error: BaseException) -> bool:
    """True for DuckDB's answer to Ctrl-C (a plain ``RuntimeError: Query interrupted``, or InterruptException).

    DuckDB turns SIGINT into an exception of its own while a query runs; callers re-raise it as
    KeyboardInterrupt so the CLI exits 130 rather than reporting an unexpected error.
    """
    if isinstance(error, duckdb.InterruptException):
        return True
    return isinstance(error, RuntimeError) and "interrupted" in str(error).lower()


def compact(con: duckdb.DuckDBPyConnection) -> None:
    """Give back the file space an aborted transaction left at the end of the store.

    A large insert writes its row groups into the file before it commits; a rollback frees them, but DuckDB only
    truncates the file in a checkpoint that has something to write (a bare CHECKPOINT after a rollback is a
    no-op), so a table is created and dropped first. Nothing stored changes. Best effort: a store that cannot be
    checkpointed now is left as it is.
    """
    try:
        con.execute("CREATE TABLE IF NOT EXISTS _curate_compact (x INTEGER)")
        con.execute("DROP TABLE _curate_compact")
        con.execute("CHECKPOINT")
    except duckdb.Error:
        pass


def release_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Give back the memory of the blocks DuckDB keeps cached after a statement (every block it wrote or read).

    DuckDB evicts cached blocks only when it needs room under ``memory_limit``, so over a long ingest the cache grows
    to the whole limit: peak RSS then grows with the store, not with the file being read. Lowering the limit for a
    moment evicts what no query holds (written blocks are simply dropped: they are on disk). Best effort.
    """
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    if row is None:
        return
    shown = str(row[0])  # rounded ('1.8 GiB'): setting it back as shown would lower the limit a little each time
    try:
        con.execute("SET memory_limit = '16MB'")
    except duckdb.Error:
        pass  # more than that is held (a temporary table): what could be evicted was
    finally:
        _restore_limit(con, shown)


@contextlib.contextmanager
def memory_capped(con: duckdb.DuckDBPyConnection, limit_mb: int) -> Iterator[None]:
    """Run a block under DuckDB ``memory_limit`` of at most ``limit_mb`` MB, then restore the connection's own (a
    connection already under it, e.g. by ``CURATE_DUCKDB_MEMORY``, is left as it is).

    DuckDB keeps the blocks a query reads or builds in memory until the limit is reached, so under the 2 GB default
    a step's peak RSS grows with the pool (resample's draw scans it) or with the file (ingest holds a file's rows
    until the commit); under a small limit it evicts, or spills to the temp folder, as it goes.
    """
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    shown = str(row[0]) if row else ""
    parts = shown.split()
    try:
        current = float(parts[0]) * _SHOWN_UNITS[parts[1].lower()]
    except (IndexError, KeyError, ValueError):
        current = float("inf")
    if current <= limit_mb * 1000**2:
        yield
        return
    con.execute(f"SET memory_limit = '{int(limit_mb)}MB'")
    try:
        yield
    finally:
        _restore_limit(con, shown)


_SHOWN_UNITS = {"bytes": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
"""The units ``current_setting('memory_limit')`` shows a limit in."""


def _restore_limit(con: duckdb.DuckDBPyConnection, shown: str) -> None:
    """Set the limit back to what open_db gave (``shown``, as ``current_setting`` rounds it, is only the fallback:
    setting it back as shown would lower the limit a little each time)."""
    con.execute("SET memory_limit = ?", [memory_limit()])
    again = con.execute("SELECT current_setting('memory_limit')").fetchone()
    if shown and (again is None or str(again[0]) != shown):  # a connection opened with another limit keeps its own
        con.execute("SET memory_limit = ?", [shown])


def is_bloated(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """True when the file holds more than two blocks beyond the blocks DuckDB uses (left by a killed write)."""
    try:
        row = con.execute("SELECT block_size, total_blocks FROM pragma_database_size() "
                          "WHERE database_name = current_database()").fetchone()
        size = os.path.getsize(path)
    except (duckdb.Error, OSError):
        return False
    if row is None:
        return False
    block_size, total_blocks = int(row[0]), int(row[1])
    return size > (total_blocks + 2) * block_size + 3 * 4096


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
        if version < 3:
            con.execute(V3_COLUMNS)
            con.execute("DROP VIEW examples")  # it was bound to the v2 columns of example_rows
            con.execute(DDL)
            con.execute(V3_BACKFILL)
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
    """A fingerprint of the stored examples of ``sources`` (all sources when None), every split.

    Read from the ``ingests`` ledger, not from the rows: only ingest and drop change ``example_rows``, and each of
    them changes the ledger of every source whose rows it changes (a file's entry per source and split, with its
    content hash, options and counts). So the fingerprint changes whenever those sources' rows do, costs one small
    query whatever the pool's size (hashing 4 million rows' hashes took seconds), and is the same after a file is
    dropped and ingested again with the same options. Ingest ids, paths and times are left out.
    """
    where, args = ("WHERE source IN (SELECT unnest(?::VARCHAR[]))", [sources]) if sources else ("", [])
    row = con.execute(
        f"""SELECT md5(coalesce(string_agg(part, ';' ORDER BY part), '')) FROM (
              SELECT concat_ws('/', source, split, file_sha256, default_source, schema, max_chars, kept, duplicates)
                AS part
              FROM ingests {where})""",
        args,
    ).fetchone()
    return str(row[0]) if row else ""
