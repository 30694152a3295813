"""Turn any supported file into one raw table of ``(origin_row, line)`` JSON records, using DuckDB's readers.

Every format is reduced to the same shape, so schema detection and normalisation are one SQL path: JSONL lines are
read verbatim (so a malformed line becomes a reject, not a failed file), JSON arrays are unnested, and CSV, Parquet
and ``datasets`` ``save_to_disk`` folders become JSON objects per row with ``to_json``. ``origin_row`` is the
1-based line number for JSONL and the 1-based row number otherwise.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import duckdb

from curate.errors import DataError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
              ".tsv": "csv"}
HF_MARKERS = ("dataset_info.json", "state.json")
INVALID_UTF8 = "invalid UTF-8"


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
             line_by_line: bool = False) -> str:
    """Create ``table(origin_row, line, pre_reason)`` holding one JSON text per input record.

    JSONL becomes a view over DuckDB's line reader (one scan, nothing materialised), which validates UTF-8
    itself: if it meets an invalid byte (here or when the view is read) it raises :class:`NotUtf8`, and the
    caller retries with ``line_by_line=True``, where Python reads the file and marks each bad line's
    ``pre_reason`` so it becomes a reject of its own. Returns the name of a relation holding the first records,
    for schema detection. Raises DataError for files that cannot be read at all (empty, a malformed JSON array,
    unreadable Parquet).
    """
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; nothing to ingest")
    drop_raw(con, table)
    try:
        if fmt == "jsonl":
            return _load_jsonl_lines(con, path, table) if line_by_line else _load_jsonl(con, path, table)
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


_LINES = ("read_csv(?, columns={'line': 'VARCHAR'}, header=false, delim='', quote='', escape='', "
          "auto_detect=false, max_line_size=1000000000)")


def _load_jsonl(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> str:
    lit = "'" + str(path).replace("'", "''") + "'"
    lines = _LINES.replace("?", lit)
    con.execute(
        f"""CREATE TEMP VIEW {table} AS SELECT origin_row, line, NULL::VARCHAR AS pre_reason FROM (
              SELECT row_number() OVER () AS origin_row, line FROM {lines}) WHERE NOT {blank('line')}"""
    )
    con.execute(
        f"""CREATE TEMP TABLE {table}_head AS SELECT row_number() OVER () AS origin_row, line,
            NULL::VARCHAR AS pre_reason FROM (SELECT line FROM {lines} LIMIT 2000)
            WHERE NOT {blank('line')}"""
    )
    return f"{table}_head"


def _load_jsonl_lines(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> str:
    """The cold path for files with invalid bytes: a Python loop, to keep each bad line as its own reject."""
    rows: list[tuple[int, str, str | None]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                rows.append((n, raw.decode("utf-8", errors="replace").rstrip("\r\n"), INVALID_UTF8))
                continue
            if line.strip():
                rows.append((n, line, None))
    con.execute(f"CREATE TEMP TABLE {table} (origin_row BIGINT, line VARCHAR, pre_reason VARCHAR)")
    if rows:
        con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
    return table


def _check_utf8_whole(path: Path) -> None:
    off = bad_utf8_offset(path)
    if off is not None:
        raise DataError(f"{path}: invalid UTF-8 at byte {off}; re-encode the file as UTF-8 (e.g. iconv -t utf-8)")


def _load_json_array(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    _check_utf8_whole(path)
    ok = con.execute("SELECT json_valid(content) FROM read_text(?)", [str(path)]).fetchone()
    if not ok or not ok[0]:
        raise DataError(f"{path}: not a valid JSON array; fix the file or save it as JSONL (one object per line)")
    con.execute(
        f"""CREATE TEMP TABLE {table} AS
            SELECT ord::BIGINT AS origin_row, elem::VARCHAR AS line, NULL::VARCHAR AS pre_reason
            FROM (SELECT unnest(json_extract(content, '$[*]')) AS elem,
                         generate_subscripts(json_extract(content, '$[*]'), 1) AS ord FROM read_text(?))""",
        [str(path)],
    )


def _from_relation(con: duckdb.DuckDBPyConnection, table: str, relation: str, args: list) -> None:
    con.execute(
        f"""CREATE TEMP TABLE {table} AS SELECT row_number() OVER () AS origin_row, to_json(t)::VARCHAR AS line,
            NULL::VARCHAR AS pre_reason FROM {relation} t""",
        args,
    )


def _load_hf(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    import pyarrow as pa

    shards = sorted(path.glob("data-*.arrow")) or sorted(path.glob("*.arrow"))
    if not shards:
        raise DataError(f"{path}: save_to_disk folder without .arrow shards; re-save it with datasets")
    tables = []
    for shard in shards:
        with pa.memory_map(str(shard)) as src:
            tables.append(pa.ipc.open_stream(src).read_all())
    con.register("_curate_arrow_rows", pa.concat_tables(tables))
    try:
        _from_relation(con, table, "_curate_arrow_rows", [])
    finally:
        con.unregister("_curate_arrow_rows")
