"""Ingest files into the store: one transaction per file, exact duplicates skipped, rejects kept with reasons.

The ledger table ``ingests`` records each file by content hash, default source and split, so ingesting the same
file again is a no-op; ingesting it again with another ``--schema`` or ``--max-chars`` replaces what it stored before
(in the same transaction). A file in which no row can be kept fails with the reason and the fix, and stores nothing:
correcting the option and ingesting again then works. For every file: rows read = kept + duplicates + rejected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.db import compact, is_interrupt
from curate.errors import CurateError, DataError, Interrupted
from curate.ingest import ledger
from curate.ingest.diagnose import array_message, is_json_array, no_rows_message
from curate.ingest.normalize import SCHEMAS, SOURCE_NAME_RE, detect_schema, normalized_select
from curate.ingest.readers import (
    NotUtf8,
    detect_format,
    discover,
    drop_raw,
    load_raw,
    raise_if_line_too_long,
    raise_if_not_utf8,
    raise_if_out_of_memory,
)

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
    replaced: bool = False  # an earlier ingest of this file with other options was removed first
    also_as: list[str] = field(default_factory=list)  # other sources the same content is stored as
    interrupted: bool = False  # Ctrl-C arrived after this file was committed

    @property
    def status(self) -> str:
        """One word for the ingest table's status column: stored, unchanged or replaced."""
        if self.cached:
            return "unchanged"  # already ingested with these options
        return "replaced" if self.replaced else "stored"


@dataclass(frozen=True)
class _Plan:
    path: Path
    fmt: str
    default_source: str
    source_opt: str | None
    split: str
    schema: str
    max_chars: int | None


def check_source_name(name: str, flag: str) -> str:
    """Return ``name`` if it is a safe source name, else raise a one-line DataError naming ``flag``."""
    if not re.fullmatch(SOURCE_NAME_RE, name):
        raise DataError(
            f"{flag}: {name!r} is not a valid source name; use letters, digits, '.', '_' or '-' "
            "(e.g. --source my_source)"
        )
    return name


def file_sha256(path: Path, *, with_names: bool = False) -> str:
    """Content hash of a file (what ``sha256sum`` prints), or of every file in a folder (HF save_to_disk).

    Folders hash each file's name and bytes, in name order. ``with_names=True`` hashes a single file that way too:
    the ledger key stores written before schema v3 used.
    """
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir() or with_names:
            h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def ingest_paths(con: duckdb.DuckDBPyConnection, paths: list[Path], *, source: str | None = None,
                 split: str = "train", schema: str = "auto", max_chars: int | None = None) -> list[FileReport]:
    """Ingest files and folders; returns one report per file.

    Validates everything up front (paths, split, schema, source names, two files that would share a source
    name), then ingests file by file; a failing file rolls back alone and raises, leaving files ingested before
    it stored (the message says so: running the same command again skips them). ``max_chars=None`` means the
    default (100,000) for a new file, and "whatever it was" for a file already ingested.

    Raises:
        DataError: a bad path, option, file or name clash (nothing of that file is stored).
        Interrupted: Ctrl-C (also DuckDB's "Query interrupted"); the file being read was rolled back.
    """
    if split not in SPLITS:
        raise DataError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if schema != "auto" and schema not in SCHEMAS:
        raise DataError(f"--schema: {schema!r} is not one of auto, {', '.join(SCHEMAS)}")
    if max_chars is not None and max_chars <= 0:
        raise DataError(f"--max-chars: must be positive, got {max_chars}")
    if source is not None:
        check_source_name(source, "--source")
    files: dict[Path, Path] = {}
    for f in discover(paths):
        files.setdefault(f.resolve(), f)  # a file named twice (or inside a folder also named) is read once
    plan = [_Plan(f, detect_format(f), source or check_source_name(_stem(f), f"{f} (file name)"), source, split,
                  schema, max_chars) for f in files.values()]
    if source is None:
        _refuse_shared_names(plan)
    reports: list[FileReport] = []
    for item in plan:
        try:
            report = _ingest_one(con, item)
        except (KeyboardInterrupt, RuntimeError) as e:
            if isinstance(e, RuntimeError) and not is_interrupt(e):
                raise
            raise Interrupted(f"{item.path} was not stored; the store is as it was before it"
                              f"{_stored_before(reports)}") from None
        except CurateError as e:
            if not reports:
                raise
            raise type(e)(f"{e}{_stored_before(reports)}") from None
        if report.interrupted:
            raise Interrupted(f"{item.path} was stored, and nothing after it; running the command again skips "
                              "the files already stored")
        reports.append(report)
    return reports


def _stored_before(reports: list[FileReport]) -> str:
    n = len(reports)
    if n == 0:
        return ""
    files, are, them = ("files", "are", "them") if n > 1 else ("file", "is", "it")
    return f" (the {n} {files} before it in this command {are} stored; running the command again skips {them})"


def _refuse_shared_names(plan: list[_Plan]) -> None:
    by_source: dict[str, list[Path]] = {}
    for item in plan:
        by_source.setdefault(item.default_source, []).append(item.path)
    for name, files in by_source.items():
        if len(files) > 1:
            raise DataError(
                f"{files[0]} and {files[1]} would both become source {name!r}; ingest them one at a time with "
                f"--source NAME for each (or --source {name} to merge them on purpose)"
            )


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _ingest_one(con: duckdb.DuckDBPyConnection, item: _Plan) -> FileReport:
    digest = file_sha256(item.path)
    prev = ledger.previous(con, digest, item.default_source, item.split)
    if prev is None and item.path.is_file() and ledger.has_legacy_rows(con):
        prev = ledger.previous(con, file_sha256(item.path, with_names=True), item.default_source, item.split)
    if prev is not None and prev.complete and prev.matches(item.schema, item.max_chars):
        return FileReport(str(item.path), item.fmt, prev.schema, prev.rows_read, prev.kept, prev.duplicates,
                          prev.rejected, prev.sources, cached=True)
    if prev is None and item.source_opt is None:
        other = ledger.other_file_in(con, item.path, item.default_source, item.split)
        if other is not None:
            raise DataError(
                f"{item.path}: source {item.default_source!r} ({item.split}) already holds {other}, another file "
                f"with this name; pass --source NAME for this one (or --source {item.default_source} to add to it)"
            )
    replace = prev.ids if prev is not None else []
    try:
        report = _attempt(con, item, digest, replace, line_by_line=False)
    except NotUtf8:  # DuckDB's reader stops at the first bad byte; Python keeps each bad line as a reject
        report = _attempt(con, item, digest, replace, line_by_line=True)
    report.replaced = bool(replace)
    return report


def _attempt(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, replace: list[int], *,
             line_by_line: bool) -> FileReport:
    """One all-or-nothing try at a file: a transaction that commits everything or nothing.

    After a rollback the file is compacted, so an aborted ingest does not leave the store holding the blocks
    DuckDB had already written for it.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        if replace:
            ledger.remove(con, replace)
        report = _load(con, item, digest, line_by_line)
        con.execute("COMMIT")
    except BaseException as e:
        con.execute("ROLLBACK")
        _drop_temps(con)
        compact(con)
        if is_interrupt(e):
            raise KeyboardInterrupt from None
        raise
    try:
        _drop_temps(con)
    except (KeyboardInterrupt, RuntimeError) as e:  # after the commit: the file is stored, say so
        if isinstance(e, RuntimeError) and not is_interrupt(e):
            raise
        report.interrupted = True
    return report


def _drop_temps(con: duckdb.DuckDBPyConnection) -> None:
    drop_raw(con, "raw")
    con.execute("DROP TABLE IF EXISTS norm")
    con.execute("DROP TABLE IF EXISTS dup")


def _load(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, line_by_line: bool) -> FileReport:
    origin, path = str(item.path), item.path
    max_chars = DEFAULT_MAX_CHARS if item.max_chars is None else item.max_chars
    head = load_raw(con, path, item.fmt, "raw", line_by_line=line_by_line)
    schema = item.schema
    if schema == "auto":
        try:
            schema = detect_schema(con, head, origin)
        except DataError:
            if is_json_array(path, item.fmt):
                raise DataError(array_message(origin)) from None
            raise
    query, args = normalized_select(schema, max_chars, item.default_source, item.split)
    try:
        con.execute(f"CREATE TEMP TABLE norm AS {query}", args)
    except duckdb.InvalidInputException as e:
        raise_if_not_utf8(e)
        raise_if_line_too_long(e, path)
        raise
    except duckdb.OutOfMemoryException as e:
        raise_if_out_of_memory(e, path)
        raise
    valid = con.execute("SELECT count(*) FROM norm WHERE reason IS NULL").fetchone()
    if not valid or not valid[0]:
        raise DataError(no_rows_message(con, origin, path, item.fmt, item.schema, schema, head, max_chars))
    # A duplicate repeats an earlier kept row of the same source and split, in this file or already stored.
    # (A group-by of first occurrences is much cheaper than a window over a million content hashes.)
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
    ingest_id = ledger.next_ingest_id(con)
    con.execute(
        """INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars, origin,
                                     origin_row, ingest_id)
           SELECT source, split, prompt, response, chat_messages, content_hash, n_chars, ?, origin_row, ?
           FROM norm WHERE reason IS NULL AND NOT duplicate""",
        [origin, ingest_id],
    )
    con.execute(
        "INSERT INTO rejects (origin, origin_row, source, split, reason, raw, ingest_id) "
        "SELECT ?, origin_row, source, split, reason, raw, ? FROM norm "
        "WHERE reason IS NOT NULL",
        [origin, ingest_id],
    )
    con.execute(
        """INSERT INTO ingests (file_sha256, origin, default_source, source, split, schema, rows_read, kept,
                               duplicates, rejected, ingested_at, ingest_id, path, max_chars, file_rows)
           SELECT ?, ?, ?, source, split, ?, count(*),
               count(*) FILTER (WHERE reason IS NULL AND NOT duplicate),
               count(*) FILTER (WHERE reason IS NULL AND duplicate),
               count(*) FILTER (WHERE reason IS NOT NULL), now(), ?, ?, ?, (SELECT count(*) FROM norm)
           FROM norm GROUP BY source, split""",
        [digest, origin, item.default_source, schema, ingest_id, str(path.resolve()), max_chars],
    )
    report = _report(con, origin, item.fmt, schema)
    report.also_as = ledger.also_stored_as(con, digest, item.default_source, item.split)
    return report


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
