"""One-line messages for a file that yields no row: what went wrong, and the change that would fix it.

A file where every row is rejected is almost always one mistake repeated (a wrong ``--schema``, numbers where
strings belong, a JSON array saved as ``.jsonl``), so the message names the commonest reason and the fix for it
rather than storing thousands of identical rejects.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from curate.errors import DataError
from curate.ingest.normalize import detect_schema
from curate.ingest.readers import INVALID_UTF8, first_char

_FIXES = {
    "malformed JSON": "fix the JSON on those lines",
    "empty response": "every kept row needs a non-empty response; check which field holds it (--schema)",
    INVALID_UTF8: "re-encode the file as UTF-8 (e.g. iconv -t utf-8)",
    "invalid source name": "fix the source column (letters, digits, '.', '_' or '-')",
    "field source is not a string": "make the source column a string",
}


def is_json_array(path: Path, fmt: str) -> bool:
    """A ``.jsonl`` file that starts with ``[`` is one JSON array, not one object per line."""
    return fmt == "jsonl" and path.is_file() and first_char(path) == "["


def array_message(origin: str) -> str:
    """The fix for a JSON array saved under a JSON Lines name."""
    stem = Path(origin).with_suffix(".json").name
    return (f"{origin}: is one JSON array, not JSON Lines (one object per line); rename it to {stem} "
            "(or write one object per line) and ingest again")


def no_rows_message(con: duckdb.DuckDBPyConnection, origin: str, path: Path, fmt: str, requested: str, used: str,
                    head: str, max_chars: int) -> str:
    """The message for a file in which no row could be kept.

    Args:
        requested: the ``--schema`` option (``auto`` or a schema name).
        used: the schema the rows were read as.
        head: the relation holding the file's first records (to suggest the schema they look like).
    """
    if is_json_array(path, fmt):
        return array_message(origin)
    total, reasons, first_row, longest = _summary(con)
    if total == 0:
        return f"{origin}: has no rows (only blank lines or an empty table); nothing to ingest"
    top = next(iter(reasons))
    counts = ", ".join(f"{r} x{n:,}" for r, n in list(reasons.items())[:2])
    what = f"{origin}: no row kept ({total:,} read as {used}, all rejected: {counts}; first at row {first_row})"
    return f"{what}; {_fix(con, top, requested, used, head, fmt, max_chars, longest)}"


def _summary(con: duckdb.DuckDBPyConnection) -> tuple[int, dict[str, int], int, int]:
    """(rows, rejects per reason (commonest first), first row with the commonest reason, longest row)."""
    row = con.execute("SELECT count(*), max(n_chars) FROM norm").fetchone()
    counted = con.execute("SELECT reason, count(*), min(origin_row) FROM norm GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    assert row is not None
    first = int(counted[0][2]) if counted else 0
    return int(row[0]), {str(k): int(v) for k, v, _ in counted}, first, int(row[1] or 0)


def _fix(con: duckdb.DuckDBPyConnection, reason: str, requested: str, used: str, head: str, fmt: str,
         max_chars: int, longest: int) -> str:
    if reason == "row over --max-chars":
        return f"raise --max-chars (now {max_chars:,}; the longest row has {longest:,} characters)"
    if reason.endswith("is not a string"):
        field = reason.removeprefix("field ").removesuffix(" is not a string")
        where = "column" if fmt in ("parquet", "csv", "hf") else "field"
        return f"store the {field} {where} as text (e.g. cast it to string) and ingest again"
    if reason in _FIXES:
        return _FIXES[reason]
    if requested != "auto":
        try:
            looks = detect_schema(con, head, "")
        except DataError:
            looks = None
        if looks and looks != used:
            return f"the rows look like {looks}: pass --schema {looks} (or leave --schema auto)"
        return "pass the --schema the rows follow (or leave --schema auto)"
    return "fix these rows or pass the right --schema"
