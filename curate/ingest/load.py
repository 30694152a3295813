"""Ingest files into the store: one transaction per file, exact duplicates skipped, rejects kept with reasons.

The ledger table ``ingests`` records each file by content hash, source option and split, so ingesting the same file
again is a no-op. For every file: rows read = kept + duplicates + rejected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.errors import DataError
from curate.ingest.normalize import SCHEMAS, SOURCE_NAME_RE, detect_schema, normalized_select
from curate.ingest.readers import NotUtf8, detect_format, discover, drop_raw, load_raw, raise_if_not_utf8

SPLITS = ("train", "val", "test")
DEFAULT_MAX_CHARS = 100_000


@dataclass
class FileReport:
    """What happened to one input file."""

    origin: str
    fmt: str
    schema: str
    rows_read: int = 0
    kept: int = 0
    duplicates: int = 0
    rejected: int = 0
    sources: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    cached: bool = False


def check_source_name(name: str, flag: str) -> str:
    """Return ``name`` if it is a safe source name, else raise a one-line DataError naming ``flag``."""
    if not re.fullmatch(SOURCE_NAME_RE, name):
        raise DataError(
            f"{flag}: {name!r} is not a valid source name; use letters, digits, '.', '_' or '-' "
            "(e.g. --source my_source)"
        )
    return name


def file_sha256(path: Path) -> str:
    """Content hash of a file, or of every file in a folder (HF save_to_disk)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def ingest_paths(con: duckdb.DuckDBPyConnection, paths: list[Path], *, source: str | None = None,
                 split: str = "train", schema: str = "auto", max_chars: int = DEFAULT_MAX_CHARS) -> list[FileReport]:
    """Ingest files and folders; returns one report per file.

    Validates everything up front (paths, split, schema, source names), then ingests file by file; a failing file
    rolls back alone and raises, leaving files ingested before it stored.
    """
    if split not in SPLITS:
        raise DataError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if schema != "auto" and schema not in SCHEMAS:
        raise DataError(f"--schema: {schema!r} is not one of auto, {', '.join(SCHEMAS)}")
    if max_chars <= 0:
        raise DataError(f"--max-chars: must be positive, got {max_chars}")
    if source is not None:
        check_source_name(source, "--source")
    files = discover(paths)
    plan = [(f, detect_format(f), source or check_source_name(_stem(f), f"{f} (file name)")) for f in files]
    return [_ingest_one(con, f, fmt, src, source, split, schema, max_chars) for f, fmt, src in plan]


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _ingest_one(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, default_source: str, source_opt: str | None,
                split: str, schema: str, max_chars: int) -> FileReport:
    digest = file_sha256(path)
    origin = str(path)
    done = con.execute(
        "SELECT schema, sum(rows_read), sum(kept), sum(duplicates), sum(rejected), list(source) FROM ingests "
        "WHERE file_sha256 = ? AND default_source = ? AND split = ? GROUP BY schema",
        [digest, default_source, split],
    ).fetchone()
    if done:
        return FileReport(origin, fmt, done[0], int(done[1]), int(done[2]), int(done[3]), int(done[4]),
                          sorted(set(done[5])), cached=True)
    try:
        return _attempt(con, path, fmt, default_source, split, schema, max_chars, digest, line_by_line=False)
    except NotUtf8:  # DuckDB's reader stops at the first bad byte; Python keeps each bad line as a reject
        return _attempt(con, path, fmt, default_source, split, schema, max_chars, digest, line_by_line=True)


def _attempt(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, default_source: str, split: str, schema: str,
             max_chars: int, digest: str, *, line_by_line: bool) -> FileReport:
    """One all-or-nothing try at a file: a transaction that commits everything or nothing."""
    con.execute("BEGIN TRANSACTION")
    try:
        report = _load(con, path, fmt, default_source, split, schema, max_chars, digest, line_by_line)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        drop_raw(con, "raw")
        con.execute("DROP TABLE IF EXISTS norm")
        con.execute("DROP TABLE IF EXISTS dup")
    return report


def _load(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, default_source: str, split: str, schema: str,
          max_chars: int, digest: str, line_by_line: bool) -> FileReport:
    origin = str(path)
    head = load_raw(con, path, fmt, "raw", line_by_line=line_by_line)
    if schema == "auto":
        schema = detect_schema(con, head, origin)
    query, args = normalized_select(schema, max_chars, default_source, split)
    # A duplicate repeats an earlier kept row of the same source and split, in this file or already stored.
    # (A group-by of first occurrences is much cheaper than a window over a million content hashes.)
    try:
        con.execute(f"CREATE TEMP TABLE norm AS {query}", args)
    except duckdb.InvalidInputException as e:
        raise_if_not_utf8(e)
        raise
    con.execute(
        """CREATE TEMP TABLE dup AS
           SELECT origin_row FROM norm WHERE reason IS NULL AND origin_row NOT IN (
               SELECT min(origin_row) FROM norm WHERE reason IS NULL GROUP BY source, split, content_hash)
           UNION
           SELECT n.origin_row FROM norm n JOIN (SELECT DISTINCT source, split, content_hash FROM example_rows) e
             ON n.reason IS NULL AND e.source = n.source AND e.split = n.split AND e.content_hash = n.content_hash"""
    )
    con.execute("ALTER TABLE norm ADD COLUMN duplicate BOOLEAN DEFAULT false")
    con.execute("UPDATE norm SET duplicate = true WHERE origin_row IN (SELECT origin_row FROM dup)")
    con.execute(
        """INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars, origin,
                                     origin_row)
           SELECT source, split, prompt, response, chat_messages, content_hash, n_chars, ?, origin_row
           FROM norm WHERE reason IS NULL AND NOT duplicate""",
        [origin],
    )
    con.execute(
        "INSERT INTO rejects SELECT ?, origin_row, source, split, reason, raw FROM norm "
        "WHERE reason IS NOT NULL",
        [origin],
    )
    con.execute(
        """INSERT INTO ingests SELECT ?, ?, ?, source, split, ?, count(*),
               count(*) FILTER (WHERE reason IS NULL AND NOT duplicate),
               count(*) FILTER (WHERE reason IS NULL AND duplicate),
               count(*) FILTER (WHERE reason IS NOT NULL), now()
           FROM norm GROUP BY source, split""",
        [digest, origin, default_source, schema],
    )
    return _report(con, origin, fmt, schema)


def _report(con: duckdb.DuckDBPyConnection, origin: str, fmt: str, schema: str) -> FileReport:
    total = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE reason IS NULL AND NOT duplicate),
                  count(*) FILTER (WHERE reason IS NULL AND duplicate), count(*) FILTER (WHERE reason IS NOT NULL),
                  list(DISTINCT source) FILTER (WHERE reason IS NULL)
           FROM norm"""
    ).fetchone()
    assert total is not None
    reasons = dict(con.execute(
        "SELECT reason, count(*) FROM norm WHERE reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall())
    return FileReport(origin, fmt, schema, int(total[0]), int(total[1]), int(total[2]), int(total[3]),
                      sorted(total[4] or []), {str(k): int(v) for k, v in reasons.items()})
