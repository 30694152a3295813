"""Turn any supported file into one raw table of ``(origin_row, line)`` JSON records, using DuckDB's readers.

Every format is reduced to the same shape, so schema detection and normalisation are one SQL path: JSONL lines are
read verbatim (so a malformed line becomes a reject, not a failed file), JSON arrays are unnested, and CSV, Parquet
and ``datasets`` ``save_to_disk`` folders become JSON objects per row with ``to_json``. ``origin_row`` is the
1-based line number for JSONL and the 1-based row number otherwise.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import duckdb

from curate.db import MEMORY_ENV
from curate.errors import DataError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
              ".tsv": "csv"}
HF_MARKERS = ("dataset_info.json", "state.json")
INVALID_UTF8 = "invalid UTF-8"
BATCH_ROWS = 50_000
"""Rows per batch where Python hands rows to DuckDB (the invalid-UTF-8 path, Arrow shards)."""


class NotUtf8(Exception):
    """DuckDB met invalid UTF-8 in a JSONL file read on the fast path; the caller retries it line by line."""


def raise_if_not_utf8(error: duckdb.Error) -> None:
    """Turn DuckDB's invalid-unicode error into :class:`NotUtf8` (other errors pass through unchanged)."""
    if "Invalid unicode" in str(error):
        raise NotUtf8(str(error)) from None


def is_hf_folder(path: Path) -> bool:
    """True for a ``datasets`` ``save_to_disk`` folder (a Dataset, not a DatasetDict)."""
    return path.is_dir() and all((path / m).exists() for m in HF_MARKERS)


def discover(paths: list[Path]) -> list[Path]:
    """Expand folders into the readable files (and HF folders) inside them, in a stable order.

    Raises:
        DataError: a path does not exist, or a folder holds nothing readable.
    """
    out: list[Path] = []
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or folder; check the path")
        if p.is_file() or is_hf_folder(p):
            out.append(p)
            continue
        found = sorted(c for c in p.iterdir() if (c.is_file() and c.suffix.lower() in EXTENSIONS) or is_hf_folder(c))
        dict_splits = sorted(c for c in p.iterdir() if is_hf_folder(c)) if (p / "dataset_dict.json").exists() else []
        if not found and not dict_splits:
            raise DataError(
                f"{p}: folder has no readable files (.jsonl .json .parquet .csv or a save_to_disk folder); "
                "point at the data files"
            )
        out.extend(dict.fromkeys(found + dict_splits))
    return out


def detect_format(path: Path) -> str:
    """The reader to use for ``path``: jsonl, json, parquet, csv or hf.

    Raises:
        DataError: unknown extension.
    """
    if is_hf_folder(path):
        return "hf"
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown format {path.suffix or '(no extension)'!r}; use .jsonl, .json, .parquet, .csv "
            "or a datasets save_to_disk folder"
        )
    if fmt == "json" and first_char(path) != "[":
        return "jsonl"  # many .json files are really one object per line
    return fmt


def first_char(path: Path) -> str:
    """The file's first character after a BOM and whitespace (``[`` for a JSON array)."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("ascii", errors="replace")


def bad_utf8_offset(path: Path) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence, or None; streamed in C-speed chunks."""
    dec = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as e:
                return offset + e.start
            offset += len(chunk)
    try:
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return offset
    return None


def load_raw(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, table: str = "raw", *,
             line_by_line: bool = False, long_lines: bool = True) -> str:
    """Create ``table(origin_row, line, pre_reason)`` holding one JSON text per input record.

    JSONL becomes a view over DuckDB's line reader (one scan, nothing materialised), which validates UTF-8 itself:
    if it meets an invalid byte (here or when the view is read) it raises :class:`NotUtf8`, and the caller retries
    with ``line_by_line=True``, where Python reads the file and marks each bad line's ``pre_reason`` so it becomes a
    reject of its own. ``long_lines=False`` reads JSONL with a small line buffer (:data:`SHORT_LINE_BYTES`) and
    raises :class:`LineTooLong` on a longer line, for the caller to retry with the full cap (:func:`line_cap`): the
    reader's buffer is as big as its longest allowed line. Returns the name of a relation holding the first records,
    for schema detection. Raises DataError for files that cannot be read at all (empty, a malformed JSON array,
    unreadable Parquet).
    """
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; nothing to ingest")
    drop_raw(con, table)
    try:
        if fmt == "jsonl":
            if line_by_line:
                return _load_jsonl_lines(con, path, table)
            return _load_jsonl(con, path, table, line_cap(con) if long_lines else short_cap(con))
        if fmt == "json":
            _load_json_array(con, path, table)
        elif fmt == "csv":
            _check_utf8_whole(path)
            delim = "\t" if path.suffix.lower() == ".tsv" else ","
            _from_relation(con, table, f"read_csv(?, all_varchar=true, header=true, delim='{delim}')", [str(path)])
        elif fmt == "parquet":
            _from_relation(con, table, "read_parquet(?)", [str(path)])
        elif fmt == "hf":
            _load_hf(con, path, table)
        else:
            raise DataError(f"{path}: unknown format {fmt!r}")
    except duckdb.Error as e:
        if fmt == "jsonl":
            raise_if_not_utf8(e)
            raise_if_line_too_long(e, path, retry=not long_lines)
        raise_if_out_of_memory(e, path)
        first = str(e).strip().splitlines()[0][:160]
        raise DataError(f"{path}: cannot read as {fmt} ({first}); fix the file") from None
    return table


def drop_raw(con: duckdb.DuckDBPyConnection, table: str = "raw") -> None:
    """Remove the raw relation (a view or a table) and its head."""
    for name in (table, f"{table}_head"):
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND temporary", [name]).fetchone()
        con.execute(f"DROP {'VIEW' if views and views[0] else 'TABLE'} IF EXISTS {name}")


def blank(expr: str) -> str:
    """SQL that is true when the string ``expr`` is NULL, empty or only whitespace.

    Only strings that start with whitespace pay for the full check; ``trim`` on every row of a big file cost
    more than parsing its JSON.
    """
    return (f"CASE WHEN coalesce({expr}, '') = '' THEN true WHEN ascii({expr}) IN (9, 10, 13, 32) "
            f"THEN regexp_full_match({expr}, '\\s*') ELSE false END")


MIN_LINE_BYTES = 2 * 1024**2
SHORT_LINE_BYTES = 8 * 1024**2
"""The line buffer tried first: DuckDB's line reader holds a buffer as big as the longest line it allows (capped at
the file's size), so a 250 MB cap made every ingest of a big file hold 250 MB. Longer lines are rare: a file that
has one is read again with the full cap."""
MAX_LINE_BYTES = 256 * 1024**2
_UNITS = {"bytes": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_TOO_LONG = re.compile(r"Maximum line size of (\d+) bytes exceeded")


def line_cap(con: duckdb.DuckDBPyConnection) -> int:
    """The longest JSONL line (bytes) the line reader accepts: an eighth of DuckDB's memory limit, 2-256 MiB.

    DuckDB's CSV reader allocates one buffer of ``max_line_size`` bytes, capped at the file's size; the old
    1 GB limit therefore made it buffer the whole file, so ingest's memory grew with the file. A line this long
    is far beyond ``--max-chars`` anyway.
    """
    limit = memory_bytes(con)
    return int(min(MAX_LINE_BYTES, max(MIN_LINE_BYTES, limit // 8)))


def memory_bytes(con: duckdb.DuckDBPyConnection) -> float:
    """DuckDB's ``memory_limit`` in bytes (infinite when it cannot be read)."""
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    parts = str(row[0] if row else "").split()
    try:
        return float(parts[0]) * _UNITS[parts[1].lower()]
    except (IndexError, KeyError, ValueError):
        return float("inf")


class LineTooLong(Exception):
    """A line is longer than the short line buffer; the caller reads the file again with the full cap."""


def short_cap(con: duckdb.DuckDBPyConnection) -> int:
    """The line buffer tried first: :data:`SHORT_LINE_BYTES`, or the full cap when that is smaller."""
    return min(SHORT_LINE_BYTES, line_cap(con))


def raise_if_line_too_long(error: duckdb.Error, path: Path, *, retry: bool = False) -> None:
    """Turn the line reader's "Maximum line size exceeded" into a one-line DataError with the fix (or into
    :class:`LineTooLong` when ``retry``: the short buffer was in use)."""
    m = _TOO_LONG.search(str(error))
    if m is not None and retry:
        raise LineTooLong(str(error)) from None
    if m is not None:
        raise DataError(
            f"{path}: a line is longer than {int(m.group(1)):,} bytes, the most one JSONL line may take with "
            f"this memory limit; raise {MEMORY_ENV} (lines may take 1/8 of it, up to 256 MiB) or fix the file"
        ) from None


def raise_if_out_of_memory(error: duckdb.Error, path: Path) -> None:
    """Turn DuckDB's Out of Memory error (a cap too small for even its spill buffers) into the fix."""
    if isinstance(error, duckdb.OutOfMemoryException) or "Out of Memory" in str(error):
        raise DataError(f"{path}: DuckDB ran out of memory under its limit; raise {MEMORY_ENV} (e.g. "
                        f"{MEMORY_ENV}=2GB) or check that the disk beside the store has room to spill") from None


def lines_relation(con: duckdb.DuckDBPyConnection, path: Path | str, cap: int | None = None) -> str:
    """DuckDB's line reader over ``path``: one VARCHAR ``line`` per line (NULL for an empty one), lines of at most
    ``cap`` bytes (default :func:`line_cap`)."""
    lit = "'" + str(path).replace("'", "''") + "'"
    cap = line_cap(con) if cap is None else cap
    return (f"read_csv({lit}, columns={{'line': 'VARCHAR'}}, header=false, delim='', quote='', escape='', "
            f"auto_detect=false, max_line_size={cap}, buffer_size={cap})")


def load_head(con: duckdb.DuckDBPyConnection, path: Path, table: str, cap: int) -> str:
    """``table`` holding the first 2,000 non-blank lines of a JSONL file (for schema detection); returns its name."""
    con.execute(
        f"""CREATE TEMP TABLE {table} AS SELECT row_number() OVER () AS origin_row, line,
            NULL::VARCHAR AS pre_reason FROM (SELECT line FROM {lines_relation(con, path, cap)} LIMIT 2000)
            WHERE NOT {blank('line')}"""
    )
    return table


def _load_jsonl(con: duckdb.DuckDBPyConnection, path: Path, table: str, cap: int) -> str:
    lines = lines_relation(con, path, cap)
    con.execute(
        f"""CREATE TEMP VIEW {table} AS SELECT origin_row, line, NULL::VARCHAR AS pre_reason FROM (
              SELECT row_number() OVER () AS origin_row, line FROM {lines}) WHERE NOT {blank('line')}"""
    )
    return load_head(con, path, f"{table}_head", cap)


def _load_jsonl_lines(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> str:
    """The cold path for files with invalid bytes: a Python loop, to keep each bad line as its own reject.

    Lines go to DuckDB in batches of :data:`BATCH_ROWS`, so Python holds one batch, never the file.
    """
    con.execute(f"CREATE TEMP TABLE {table} (origin_row BIGINT, line VARCHAR, pre_reason VARCHAR)")
    batch: list[tuple[int, str, str | None]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                batch.append((n, raw.decode("utf-8", errors="replace").rstrip("\r\n"), INVALID_UTF8))
            else:
                if line.strip():
                    batch.append((n, line, None))
            if len(batch) >= BATCH_ROWS:
                _insert_lines(con, table, batch)
                batch = []
    _insert_lines(con, table, batch)
    return table


def _insert_lines(con: duckdb.DuckDBPyConnection, table: str, batch: list[tuple[int, str, str | None]]) -> None:
    if not batch:
        return
    import pyarrow as pa

    rows, lines, reasons = zip(*batch, strict=True)
    arrow = pa.table({"origin_row": pa.array(rows, pa.int64()), "line": pa.array(lines, pa.string()),
                      "pre_reason": pa.array(reasons, pa.string())})
    con.register("_curate_line_batch", arrow)
    try:
        con.execute(f"INSERT INTO {table} SELECT origin_row, line, pre_reason FROM _curate_line_batch")
    finally:
        con.unregister("_curate_line_batch")


def _check_utf8_whole(path: Path) -> None:
    off = bad_utf8_offset(path)
    if off is not None:
        raise DataError(f"{path}: invalid UTF-8 at byte {off}; re-encode the file as UTF-8 (e.g. iconv -t utf-8)")


def _load_json_array(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    """Element by element with DuckDB's streaming array reader: the file is never one string in memory."""
    _check_utf8_whole(path)
    cap = line_cap(con)
    try:
        con.execute(
            f"""CREATE TEMP TABLE {table} AS
                SELECT row_number() OVER () AS origin_row, json_extract(json, '$')::VARCHAR AS line,
                       NULL::VARCHAR AS pre_reason
                FROM read_json_objects(?, format='array', maximum_object_size={cap})""",
            [str(path)],
        )
    except duckdb.InvalidInputException as e:
        if "maximum_object_size" in str(e):
            raise DataError(f"{path}: an element is larger than {cap:,} bytes, the most one JSON array element may "
                            f"take with this memory limit; raise {MEMORY_ENV} or save the file as JSONL") from None
        raise DataError(f"{path}: not a valid JSON array; fix the file or save it as JSONL (one object per line)"
                        ) from None


def _from_relation(con: duckdb.DuckDBPyConnection, table: str, relation: str, args: list) -> None:
    con.execute(
        f"""CREATE TEMP TABLE {table} AS SELECT row_number() OVER () AS origin_row, to_json(t)::VARCHAR AS line,
            NULL::VARCHAR AS pre_reason FROM {relation} t""",
        args,
    )


def _load_hf(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    """Shard by shard, record batch by record batch: the folder is never concatenated into one Arrow table."""
    import pyarrow as pa

    shards = sorted(path.glob("data-*.arrow")) or sorted(path.glob("*.arrow"))
    if not shards:
        raise DataError(f"{path}: save_to_disk folder without .arrow shards; re-save it with datasets")
    con.execute(f"CREATE TEMP TABLE {table} (origin_row BIGINT, line VARCHAR, pre_reason VARCHAR)")
    offset = 0
    for shard in shards:
        with pa.memory_map(str(shard)) as src:
            for batch in pa.ipc.open_stream(src):
                con.register("_curate_arrow_rows", pa.Table.from_batches([batch]))
                try:
                    con.execute(f"""INSERT INTO {table} SELECT ? + row_number() OVER () AS origin_row,
                                    to_json(t)::VARCHAR AS line, NULL::VARCHAR FROM _curate_arrow_rows t""",
                                [offset])
                finally:
                    con.unregister("_curate_arrow_rows")
                offset += batch.num_rows
