"""Ingest files into the store: one transaction per file, exact duplicates skipped, rejects kept with reasons.

The ledger table ``ingests`` records each file by content hash, default source and split, so ingesting the same
file again is a no-op; ingesting it again with another ``--schema`` or ``--max-chars`` replaces what it stored before
(in the same transaction). A file in which no row can be kept fails with the reason and the fix, and stores nothing:
correcting the option and ingesting again then works. For every file: rows read = kept + duplicates + rejected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.db import compact, is_interrupt, memory_capped, release_cache
from curate.errors import CurateError, DataError, Interrupted
from curate.ingest import fast, ledger
from curate.ingest.diagnose import array_message, is_json_array, no_rows_message
from curate.ingest.normalize import FLAT_FIELDS, SCHEMAS, SOURCE_NAME_RE, detect_schema, normalized_select
from curate.ingest.readers import (
    LineTooLong,
    NotUtf8,
    detect_format,
    discover,
    drop_raw,
    load_head,
    load_raw,
    raise_if_line_too_long,
    raise_if_not_utf8,
    raise_if_out_of_memory,
    short_cap,
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


@dataclass(frozen=True)
class _Scan:
    digest: str
    lines: int | None  # lines as DuckDB's line reader counts them; None when the fast path cannot use the file


def _scan(path: Path, stop: threading.Event | None = None) -> _Scan:
    """:func:`file_sha256` of a file, and its line count from the same read (``\\n`` ends a line, so does the end
    of the file). A file with a carriage return that is not part of ``\\r\\n`` gets no count: the line reader
    and the JSON reader may split it differently."""
    if path.is_dir():
        return _Scan(file_sha256(path), None)
    import numpy as np

    h = hashlib.sha256()
    lf = cr = crlf = 0
    last = b""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            if stop is not None and stop.is_set():
                raise RuntimeError("ingest stopped")  # nobody waits for this result any more
            h.update(chunk)
            lf += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == 10))  # twice as fast as bytes.count
            if chunk.find(b"\r") >= 0 or last == b"\r":  # rare: most files have no carriage return at all
                cr += chunk.count(b"\r")
                crlf += chunk.count(b"\r\n") + (last == b"\r" and chunk[:1] == b"\n")
            last = chunk[-1:]
    lines = lf + (last not in (b"", b"\n"))
    return _Scan(h.hexdigest(), lines if cr == crlf else None)


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
    # The next file is hashed while DuckDB works on this one (hashlib and numpy let go of the GIL): the hash costs
    # about a tenth of an ingest, and DuckDB waits on the disk at every commit.
    scans, stop = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-hash"), threading.Event()
    ahead = scans.submit(_scan, plan[0].path, stop) if plan else None
    try:
        for i, item in enumerate(plan):
            assert ahead is not None
            this, ahead = ahead, (scans.submit(_scan, plan[i + 1].path, stop) if i + 1 < len(plan) else None)
            try:
                reports.append(_ingest_checked(con, item, this, reports))
            finally:
                with contextlib.suppress(duckdb.Error):
                    release_cache(con)  # peak memory follows the file being read, not the store written so far
    finally:
        stop.set()  # a hash still running stops at its next chunk (Ctrl-C does not wait for it)
        scans.shutdown(wait=False, cancel_futures=True)
    return reports


def _ingest_checked(con: duckdb.DuckDBPyConnection, item: _Plan, scan: Future[_Scan],
                    reports: list[FileReport]) -> FileReport:
    """:func:`_ingest_one`, its failures worded for a command that may have stored ``reports`` before it."""
    try:
        report = _ingest_one(con, item, scan.result())
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
    return report


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


def _ingest_one(con: duckdb.DuckDBPyConnection, item: _Plan, scan: _Scan) -> FileReport:
    digest = scan.digest
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
    mode = _Mode(fast=item.fmt == "jsonl" and scan.lines is not None)
    while True:
        try:
            report = _attempt(con, item, digest, replace, mode, scan.lines)
            break
        except fast.Unsuitable:  # not a file the fast path reads exactly: the general path does
            nxt = dataclasses.replace(mode, fast=False)
        except LineTooLong:  # a line longer than the short buffer: read again with the full cap
            nxt = dataclasses.replace(mode, fast=False, long_lines=True)
        except NotUtf8:  # DuckDB's reader stops at the first bad byte; Python keeps each bad line as a reject
            nxt = dataclasses.replace(mode, fast=False, line_by_line=True)
        if nxt == mode:
            raise RuntimeError(f"{item.path}: ingest retried with the same reader ({mode})")
        mode = nxt
    report.replaced = bool(replace)
    return report


@dataclass(frozen=True)
class _Mode:
    """How a file is read: the fast path (:mod:`curate.ingest.fast`), or the general one with a short or the full
    line buffer, or Python line by line (invalid UTF-8)."""

    fast: bool = False
    long_lines: bool = False
    line_by_line: bool = False


def _attempt(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, replace: list[int], mode: _Mode,
             lines: int | None) -> FileReport:
    """One all-or-nothing try at a file: a transaction that commits everything or nothing.

    After a rollback the file is compacted, so an aborted ingest does not leave the store holding the blocks
    DuckDB had already written for it. The fast path runs under :data:`fast.MEMORY_MB`.
    """
    if not mode.fast:
        return _transaction(con, item, digest, replace, mode, lines)
    with fast.file_on_the_probe_side(con), memory_capped(con, fast.MEMORY_MB):
        return _transaction(con, item, digest, replace, mode, lines)


def _transaction(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, replace: list[int], mode: _Mode,
                 lines: int | None) -> FileReport:
    con.execute("BEGIN TRANSACTION")
    try:
        if replace:
            ledger.remove(con, replace)
        if mode.fast:
            assert lines is not None
            report = _load_fast(con, item, digest, lines)
        else:
            report = _load(con, item, digest, mode)
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
        if lines is not None and lines > fast.CHECKPOINT_ROWS:
            _checkpoint(con)
    except (KeyboardInterrupt, RuntimeError) as e:  # after the commit: the file is stored, say so
        if isinstance(e, RuntimeError) and not is_interrupt(e):
            raise
        report.interrupted = True
    return report


def _checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Checkpoint after a big file. Its rows went to the store as row groups written during the insert, the last one
    partly full; DuckDB merges such row groups at its next checkpoint, which otherwise came at the end of the
    command: a pause of many seconds and, for a pool of millions of rows, gigabytes of memory. Best effort."""
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as e:
        if is_interrupt(e):
            raise


def _drop_temps(con: duckdb.DuckDBPyConnection) -> None:
    drop_raw(con, "raw")
    for table in ("norm", "dup", *fast.TEMP_TABLES):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _detect(con: duckdb.DuckDBPyConnection, item: _Plan, head: str) -> str:
    if item.schema != "auto":
        return item.schema
    try:
        return detect_schema(con, head, str(item.path))
    except DataError:
        if is_json_array(item.path, item.fmt):
            raise DataError(array_message(str(item.path))) from None
        raise


def _load_fast(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, lines: int) -> FileReport:
    """A flat-schema JSONL file through :mod:`curate.ingest.fast`: the same rows, rejects and ledger as
    :func:`_load`. Raises :class:`fast.Unsuitable` for anything it does not read exactly."""
    origin, path = str(item.path), item.path
    max_chars = DEFAULT_MAX_CHARS if item.max_chars is None else item.max_chars
    if path.stat().st_size == 0:
        raise fast.Unsuitable("empty file")
    try:
        head = load_head(con, path, "raw_head", short_cap(con))
    except duckdb.Error as e:
        if is_interrupt(e):
            raise
        raise fast.Unsuitable(str(e)) from None  # bad UTF-8, a long line...: the general path says what
    schema = _detect(con, item, head)
    if schema not in FLAT_FIELDS:
        raise fast.Unsuitable(f"schema {schema}")
    ingest_id = ledger.next_ingest_id(con)
    got = fast.load_fast(con, origin, schema, max_chars, item.default_source, item.split, ingest_id, lines)
    if not got.kept + got.duplicates:
        raise fast.Unsuitable("no row kept")  # the general path explains why, with the fix
    con.execute(
        """INSERT INTO ingests (file_sha256, origin, default_source, source, split, schema, rows_read, kept,
                               duplicates, rejected, ingested_at, ingest_id, path, max_chars, file_rows)
           SELECT ?, ?, ?, source, ?, ?, kept + duplicates + rejected, kept, duplicates, rejected, now(), ?, ?, ?, ?
           FROM fast_groups""",
        [digest, origin, item.default_source, item.split, schema, ingest_id, str(path.resolve()), max_chars,
         got.rows_read],
    )
    report = FileReport(origin, item.fmt, schema, got.rows_read, got.kept, got.duplicates, got.rejected,
                        got.sources, got.reasons)
    report.also_as = ledger.also_stored_as(con, digest, item.default_source, item.split)
    return report


def _load(con: duckdb.DuckDBPyConnection, item: _Plan, digest: str, mode: _Mode) -> FileReport:
    origin, path = str(item.path), item.path
    max_chars = DEFAULT_MAX_CHARS if item.max_chars is None else item.max_chars
    head = load_raw(con, path, item.fmt, "raw", line_by_line=mode.line_by_line, long_lines=mode.long_lines)
    schema = _detect(con, item, head)
    query, args = normalized_select(schema, max_chars, item.default_source, item.split)
    try:
        con.execute(f"CREATE TEMP TABLE norm AS {query}", args)
    except duckdb.InvalidInputException as e:
        raise_if_not_utf8(e)
        raise_if_line_too_long(e, path, retry=item.fmt == "jsonl" and not mode.long_lines)
        raise
    except duckdb.OutOfMemoryException as e:
        raise_if_out_of_memory(e, path)
        raise
    valid = con.execute("SELECT count(*) FROM norm WHERE reason IS NULL").fetchone()
    if not valid or not valid[0]:
        raise DataError(no_rows_message(con, origin, path, item.fmt, item.schema, schema, head, max_chars))
    # A duplicate repeats an earlier kept row of the same source and split, in this file or already stored.
    # (A group-by of first occurrences is much cheaper than a window over a million content hashes.)
    sources = [str(r[0]) for r in con.execute(
        "SELECT DISTINCT source FROM norm WHERE reason IS NULL ORDER BY 1").fetchall()]
    con.execute(
        f"""CREATE TEMP TABLE dup AS
           SELECT origin_row FROM norm WHERE reason IS NULL AND origin_row NOT IN (
               SELECT min(origin_row) FROM norm WHERE reason IS NULL GROUP BY source, split, content_hash)
           UNION
           SELECT n.origin_row FROM norm n JOIN ({fast.stored_keys(sources, item.split)}) e
             ON n.reason IS NULL AND e.source = n.source AND e.split = n.split AND e.content_hash = n.content_hash""",
        {"id": -1},
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
