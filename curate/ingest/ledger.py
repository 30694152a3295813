"""What each ingest brought: the ``ingests`` ledger, and removing or listing what a file or source stored.

An ingest is identified by (file content hash, default source, split); every row and reject it stored carries its
``ingest_id``, so ``curate drop --file F`` removes exactly what that file brought, and re-ingesting a file with other
options (``--schema``, ``--max-chars``) first removes what the earlier ingest of it stored. Runs (``runs``,
``weights``, ``scores``) are never touched: they record what happened, whatever is stored now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.db import compact, is_interrupt
from curate.errors import ConfigError, DataError, Interrupted


@dataclass(frozen=True)
class Previous:
    """The stored ingest of a file (same content, default source and split), as the ledger has it."""

    ids: list[int]
    schema: str
    max_chars: int | None
    origin: str
    rows_read: int
    kept: int
    duplicates: int
    rejected: int
    sources: list[str]
    complete: bool  # False once `drop --source` removed part of what the file brought

    def matches(self, schema: str, max_chars: int | None) -> bool:
        """Would ingesting again with these options store the same rows? ``auto`` and no --max-chars always do."""
        same_schema = schema == "auto" or schema == self.schema
        same_max = max_chars is None or self.max_chars is None or max_chars == self.max_chars
        return same_schema and same_max


def previous(con: duckdb.DuckDBPyConnection, digest: str, default_source: str, split: str) -> Previous | None:
    """The ledger entry of this file as ``default_source`` in ``split``, or None when it was never ingested so."""
    row = con.execute(
        """SELECT list(DISTINCT ingest_id), any_value(schema), max(max_chars), any_value(origin), sum(rows_read),
                  sum(kept), sum(duplicates), sum(rejected), list(DISTINCT source ORDER BY source),
                  sum(rows_read) = coalesce(max(file_rows), sum(rows_read))
           FROM ingests WHERE file_sha256 = ? AND default_source = ? AND split = ?""",
        [digest, default_source, split],
    ).fetchone()
    if row is None or row[4] is None:
        return None
    return Previous([int(i) for i in row[0] if i is not None], str(row[1]), None if row[2] is None else int(row[2]),
                    str(row[3]), int(row[4]), int(row[5]), int(row[6]), int(row[7]), list(row[8]), bool(row[9]))


def has_legacy_rows(con: duckdb.DuckDBPyConnection) -> bool:
    """True when the ledger has entries from before schema v3 (keyed by a hash of a file's name and bytes)."""
    row = con.execute("SELECT count(*) FROM ingests WHERE path IS NULL").fetchone()
    return bool(row and row[0])


def other_file_in(con: duckdb.DuckDBPyConnection, path: Path, source: str, split: str) -> str | None:
    """The origin of another file already stored in ``source``/``split`` (None when there is none).

    Used when a source name comes from a file name: ``d2/same.jsonl`` must not silently join the rows of
    ``d1/same.jsonl``. Ledger rows from before paths were recorded compare the path as typed.
    """
    row = con.execute(
        """SELECT origin FROM ingests WHERE source = ? AND split = ?
             AND CASE WHEN path IS NULL THEN origin <> ? ELSE path <> ? END
           ORDER BY ingested_at LIMIT 1""",
        [source, split, str(path), str(path.resolve())],
    ).fetchone()
    return None if row is None else str(row[0])


def also_stored_as(con: duckdb.DuckDBPyConnection, digest: str, default_source: str, split: str) -> list[str]:
    """Other default sources the same file content was ingested as, in the same split."""
    rows = con.execute(
        "SELECT DISTINCT default_source FROM ingests WHERE file_sha256 = ? AND split = ? AND default_source <> ? "
        "ORDER BY 1", [digest, split, default_source]).fetchall()
    return [str(r[0]) for r in rows]


def next_ingest_id(con: duckdb.DuckDBPyConnection) -> int:
    """A fresh ingest id (call inside the ingest's transaction; the store has one writer at a time)."""
    row = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchone()
    return int(row[0]) if row else 1


def remove(con: duckdb.DuckDBPyConnection, ids: list[int]) -> None:
    """Delete the rows, rejects and ledger rows of these ingests (inside the caller's transaction)."""
    for table in ("example_rows", "rejects", "ingests"):
        con.execute(f"DELETE FROM {table} WHERE ingest_id IN (SELECT unnest(?::BIGINT[]))", [ids])


@dataclass(frozen=True)
class Dropped:
    """What was removed for one file, source and split."""

    origin: str
    source: str
    split: str
    rows: int
    rejects: int


@dataclass
class DropReport:
    """Everything ``drop`` removed, and what it could not put right by itself."""

    what: str
    removed: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.removed)

    @property
    def rejects(self) -> int:
        return sum(d.rejects for d in self.removed)


_COUNTS = """
SELECT origin, source, split, sum(r) AS rows, sum(j) AS rejects FROM (
    SELECT origin, source, split, count(*) AS r, 0 AS j FROM example_rows WHERE {where} GROUP BY ALL
    UNION ALL SELECT origin, source, split, 0, count(*) FROM rejects WHERE {where} GROUP BY ALL
    UNION ALL SELECT origin, source, split, 0, 0 FROM ingests WHERE {where}
) GROUP BY ALL ORDER BY origin, source, split
"""


def drop(con: duckdb.DuckDBPyConnection, *, source: str | None = None, file: str | None = None) -> DropReport:
    """Remove what a source (every split) or one ingested file brought: rows, rejects and ledger rows.

    One transaction: all of it goes, or (on an error or Ctrl-C) nothing does. ``file`` is matched against the
    absolute path of each ingested file, then against the path as it was typed, then against a sha256 (or a
    prefix of at least 8 hex digits).

    Raises:
        ConfigError: neither or both of ``source`` and ``file``.
        DataError: nothing stored matches.
    """
    if (source is None) == (file is None):
        raise ConfigError("drop: pass exactly one of --source NAME or --file PATH")
    args: list[object]
    if source is not None:
        where, args, what = "source = ?", [source], f"source {source!r}"
        notes: list[str] = []
    else:
        assert file is not None
        ids = _file_ingests(con, file)
        where, args, what = "ingest_id IN (SELECT unnest(?::BIGINT[]))", [ids], f"file {file}"
        notes = _dedup_notes(con, ids)
    removed = [Dropped(str(o), str(s), str(sp), int(r), int(j))
               for o, s, sp, r, j in con.execute(_COUNTS.format(where=where), args * 3).fetchall()]
    if not removed:
        known = _listing(con, "SELECT DISTINCT source FROM ingests UNION SELECT DISTINCT source FROM example_rows")
        raise DataError(f"--source {source!r}: no such source in the store ({known}); `curate sources` lists them")
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("example_rows", "rejects", "ingests"):
            con.execute(f"DELETE FROM {table} WHERE {where}", args)
        con.execute("COMMIT")
    except BaseException as e:
        con.execute("ROLLBACK")
        compact(con)
        if isinstance(e, KeyboardInterrupt) or is_interrupt(e):
            raise Interrupted(f"nothing was dropped; the store is as it was ({what} is still there)") from None
        raise
    return DropReport(what, removed, notes)


def _file_ingests(con: duckdb.DuckDBPyConnection, file: str) -> list[int]:
    resolved = str(Path(file).expanduser().resolve())
    tries: list[tuple[str, list]] = [("path = ?", [resolved]), ("origin = ? OR origin = ?", [file, str(Path(file))])]
    digest = file.lower()
    if len(digest) >= 8 and all(c in "0123456789abcdef" for c in digest):
        tries.append(("starts_with(file_sha256, ?)", [digest]))
    for cond, args in tries:
        ids = con.execute(f"SELECT DISTINCT ingest_id FROM ingests WHERE ({cond}) AND ingest_id IS NOT NULL "
                          "ORDER BY 1", args).fetchall()
        if ids:
            return [int(i[0]) for i in ids]
    known = _listing(con, "SELECT DISTINCT origin FROM ingests")
    raise DataError(f"--file {file}: no ingested file matches (its path as ingested, or its sha256); ingested "
                    f"files: {known}")


def _dedup_notes(con: duckdb.DuckDBPyConnection, ids: list[int]) -> list[str]:
    """Files ingested later into the same source and split may have skipped rows as repeats of the dropped ones."""
    rows = con.execute(
        """SELECT DISTINCT o.origin, o.source, o.split FROM ingests o JOIN ingests d
             ON d.ingest_id IN (SELECT unnest(?::BIGINT[])) AND o.ingest_id NOT IN (SELECT unnest(?::BIGINT[]))
            AND o.source = d.source AND o.split = d.split AND o.duplicates > 0 AND o.ingested_at >= d.ingested_at
           ORDER BY 1""", [ids, ids]).fetchall()
    return [f"{o} (source {s}, {sp}) skipped rows as duplicates after this file was stored; rows it shared with it "
            f"are gone now: `curate drop --file {o}` and ingest it again to restore them" for o, s, sp in rows]


def _listing(con: duckdb.DuckDBPyConnection, sql: str, most: int = 6) -> str:
    names = sorted(str(r[0]) for r in con.execute(sql).fetchall() if r[0] is not None)
    if not names:
        return "the store is empty"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


@dataclass(frozen=True)
class Reject:
    """One row that was read and not kept."""

    origin: str
    origin_row: int
    source: str
    split: str
    reason: str
    raw: str


def list_rejects(con: duckdb.DuckDBPyConnection, source: str | None = None,
                 limit: int = 20) -> tuple[list[Reject], int, dict[str, int]]:
    """The first ``limit`` rejects (by file and row), how many there are, and how many per reason.

    Raises:
        ConfigError: ``limit`` below 1.
        DataError: ``source`` is not in the store at all.
    """
    if limit < 1:
        raise ConfigError(f"--limit: must be at least 1, got {limit}")
    where, args = ("WHERE source = ?", [source]) if source is not None else ("", [])
    if source is not None:
        known = con.execute("SELECT count(*) FROM ingests WHERE source = ? OR default_source = ?",
                            [source, source]).fetchone()
        if not known or not known[0]:
            have = _listing(con, "SELECT DISTINCT source FROM ingests")
            raise DataError(f"--source {source!r}: no such source in the store ({have}); `curate sources` lists them")
    rows = con.execute(f"SELECT origin, origin_row, source, split, reason, raw FROM rejects {where} "
                       "ORDER BY origin, origin_row LIMIT ?", [*args, limit]).fetchall()
    by_reason = dict(con.execute(f"SELECT reason, count(*) FROM rejects {where} GROUP BY 1 ORDER BY 2 DESC, 1",
                                 args).fetchall())
    rejects = [Reject(str(o), int(n), str(s), str(sp), str(r), "" if raw is None else str(raw))
               for o, n, s, sp, r, raw in rows]
    return rejects, sum(by_reason.values()), {str(k): int(v) for k, v in by_reason.items()}
