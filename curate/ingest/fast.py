"""The fast path for flat JSONL files: DuckDB's own JSON reader straight into ``example_rows``, one pass.

The general path (:mod:`curate.ingest.normalize`) reads every line as text and parses it with JSON functions
twice, into a temporary table holding the whole file, then copies the kept rows out of it. For the common case, a
JSONL file of one object per line in a flat schema (alpaca, prompt/response, text), this module gets the same stored
rows, rejects and ledger for a fraction of the work and with memory that does not grow with the file:

1. ``read_json`` (strict: a malformed line, a duplicate key or a record over several lines fails the whole read)
   with the schema's fields as VARCHAR columns streams the file once; every row whose fields are unambiguous strings
   and that no check rejects (a *clean* row) goes straight into ``example_rows`` with its md5 content hash.
   ``read_json`` turns a number, boolean, object or array into text, so a value that could be one of those (``42``,
   ``true``, ``{...}``) makes its row *hard* rather than clean: such a row is decided by the general path's SQL.
2. When fewer rows went in than the file has lines, one narrow pass lists the hard rows (rejects, ambiguous values);
   their lines are read again and normalised by the general path's query, so each gets exactly the reason (or the
   kept values) the general path gives it.
3. Duplicates (a repeat of an earlier row of the file, or of a stored row of the same source and split) are found
   on the narrow key columns and deleted again inside the transaction; in a file bigger than a row group, where a
   delete makes the commit rewrite what it touches, a line that repeats an earlier line byte for byte is found on
   the lines first and never inserted.

Each file's insert runs on one thread: ``row_number() OVER ()``, which numbers the records, is a streaming window,
and DuckDB runs the whole pipeline behind it in order (0.99 cores against 1.18 for the same insert unnumbered).

``origin_row`` is the record's position, which is its line number only when the file has no blank lines: the
caller passes the line count it saw while hashing the file, and any mismatch (or a failed strict read) raises
:class:`Unsuitable`, after which the caller rolls back and uses the general path. Everything runs inside the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from curate.ingest.normalize import FLAT_FIELDS, SOURCE_NAME_RE, normalized_select
from curate.ingest.readers import blank, line_cap, lines_relation, memory_bytes, raise_if_line_too_long

MAX_OBJECT_BYTES = 16 * 1024**2
"""Largest record the strict reader takes (its buffers scale with it); a longer line goes to the general path."""
MIN_MEMORY_BYTES = 100 * 1000**2
"""The smallest DuckDB memory limit the fast path runs under: the JSON reader takes 32 MiB buffers per thread and
the insert a row group per thread; below it (or on running out of memory anyway) the general path, which spills
more finely, does the file."""


SMALL_FILE_ROWS = 8_000_000
"""A file of at most this many lines is inserted in one pass and its duplicates deleted after (see
:func:`_load_small`); a bigger one finds them first. One pass reads the JSON once instead of twice: at 18 files of
233,000 rows (4.2M rows, in-process on 2 busy cores) it took ingest from 146 s to 86 s and its peak RSS from 628 to
471 MiB. Deleting the ~1% duplicates from row groups already written costs the commit about 0.6 s a file."""
MEMORY_MB = 180
"""DuckDB's memory limit (MB) while the fast path reads a file and commits it (:func:`curate.db.memory_capped`).
DuckDB holds a file's inserted rows in memory until the commit (and caches what it writes), so under the 2 GB default
ingest's peak RSS followed the size of the file (18 files, in-process: 305 MiB at 1M rows, 465 at 4.2M); under
180 MB it spills instead: 238 and 286 MiB (256 MB: 260 and 328; 128 MB: 213 and 240, but each insert twice as
slow)."""
CHECKPOINT_ROWS = 122_880
"""DuckDB's row group: after a file of more lines than this the ingest checkpoints (:func:`load._checkpoint`)."""
TWINS_FROM_LINES = CHECKPOINT_ROWS
"""A file of more lines than this looks for repeated lines before its insert (:func:`_line_twins`); in a smaller one a
delete costs nothing (see :func:`_load_small`)."""
TEMP_TABLES = ("fast_keys", "fast_twins", "fast_groups", "fast_line_hashes", "fast_line_twins",
               "fast_twin_dups")
"""Temporary tables this module creates besides the general path's ``raw``, ``norm`` and ``dup``."""


class Unsuitable(Exception):
    """The file is not one the fast path handles exactly; roll back and use the general path."""


@dataclass
class FastResult:
    """What the fast path stored for one file (all inside the caller's transaction)."""

    rows_read: int
    kept: int
    duplicates: int
    rejected: int
    sources: list[str]
    reasons: dict[str, int]


NUMBER_STARTS = (9, 10, 11, 12, 13, 32, 43, 45, 46, *range(48, 58))
"""The first characters (code points) of the strings DuckDB's ``try_cast(... AS DOUBLE)`` reads as a number, besides
Infinity and NaN (which ``read_json`` accepts unquoted, and ``try_cast`` reads in any case): whitespace, ``+ - .``
and digits. Found by trying every ASCII character and the Unicode spaces before number-like tails."""


def _ambiguous(col: str) -> str:
    """True when ``read_json``'s text for ``col`` could have come from a JSON number, boolean, object or array.

    ``try_cast`` runs only on strings whose first characters a number can start with (a CASE, which DuckDB evaluates
    on the matching rows alone: the same test as an OR of ANDs took twice as long)."""
    starts = ", ".join(map(str, NUMBER_STARTS))
    number = f"try_cast({col} AS DOUBLE) IS NOT NULL"
    return (f"({col} IN ('true', 'false') OR ascii({col}) IN (91, 123) OR CASE "
            f"WHEN ascii({col}) IN ({starts}) THEN {number} "
            f"WHEN ascii({col}) IN (73, 78, 105, 110) AND ascii(substr({col}, 2, 1)) IN (65, 78, 97, 110) "
            f"THEN {number} ELSE false END)")  # In(finity) and Na(N), in either case


def _string(col: str) -> str:
    """``col`` is absent (or JSON null), or a string the general path reads the same way."""
    return f"({col} IS NULL OR NOT {_ambiguous(col)})"


def fast_select(schema: str, max_chars: int, default_source: str) -> tuple[str, dict]:
    """SQL over ``read_json`` of the file (named parameter ``$path``): ``origin_row, source, prompt, response,
    n_chars, clean``. ``clean`` is true only for rows the general path keeps with these very values."""
    names = FLAT_FIELDS[schema]
    fields = (*names, "source")
    columns = "{" + ", ".join(f"'{f}': 'VARCHAR'" for f in fields) + "}"
    f = {n: f"f_{n}" for n in fields}  # the record's fields, renamed apart from the output columns
    if schema == "alpaca":
        ins, inp, out = f["instruction"], f["input"], f["output"]
        prompt = f"{ins} || CASE WHEN coalesce({inp}, '') <> '' THEN chr(10) || chr(10) || {inp} ELSE '' END"
        response = out
        typed = f"{ins} IS NOT NULL AND {_string(ins)} AND {_string(inp)} AND {out} IS NOT NULL AND {_string(out)}"
    elif schema == "prompt_response":
        p, r, c = f["prompt"], f["response"], f["completion"]
        prompt, response = p, f"coalesce({r}, {c})"
        typed = (f"{p} IS NOT NULL AND {_string(p)} AND ({r} IS NOT NULL OR {c} IS NOT NULL) AND {_string(r)} "
                 f"AND {_string(c)}")
    else:
        t = f["text"]
        prompt, response, typed = "''", t, f"{t} IS NOT NULL AND {_string(t)}"
    src = f["source"]
    reader = (f"read_json($path, format='newline_delimited', records=true, columns={columns}, "
              f"maximum_object_size={{max_object}})")
    query = f"""
    WITH r AS (SELECT row_number() OVER () AS origin_row, {", ".join(f'"{n}" AS {f[n]}' for n in fields)}
               FROM {reader}),
    b AS (SELECT *, {prompt} AS prompt, {response} AS response, coalesce({src}, $default_source) AS source FROM r)
    SELECT origin_row, source, prompt, response, length(prompt) + length(response) AS n_chars,
           coalesce({typed} AND ({src} IS NULL OR ({_string(src)} AND regexp_full_match({src}, '{SOURCE_NAME_RE}')))
                    AND NOT {blank('response')} AND length(prompt) + length(response) <= {int(max_chars)}, false)
             AS clean
    FROM b
    """
    return query, {"default_source": default_source}


def load_fast(con: duckdb.DuckDBPyConnection, path: str, schema: str, max_chars: int, default_source: str,
              split: str, ingest_id: int, lines: int) -> FastResult:
    """Store the file's rows and rejects under ``ingest_id`` (see the module docstring); returns the counts. Run it
    inside :func:`file_on_the_probe_side`.

    Raises:
        Unsuitable: the strict reader refused the file, or its records do not line up with its ``lines``.
    """
    if memory_bytes(con) < MIN_MEMORY_BYTES:
        raise Unsuitable("memory limit too small")
    return _load(con, path, schema, max_chars, default_source, split, ingest_id, lines)


@contextmanager
def file_on_the_probe_side(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Keep DuckDB from building a join's hash table on the file being read (wrap the whole transaction: a setting
    cannot be changed inside an aborted one).

    ``read_json`` guesses a few dozen rows for any file, so DuckDB's build-side optimizer would hash the whole file
    (hundreds of MB) rather than the small table it is joined with (``x IN (SELECT ...)`` became a right semi join
    over the file). Without it the subquery side is built, as written.
    """
    row = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    before = str(row[0]) if row and row[0] else ""
    names = [n.strip() for n in before.split(",") if n.strip()]
    con.execute("SET disabled_optimizers = ?", [",".join([*names, "build_side_probe_side"])])
    try:
        yield
    finally:
        if before:
            con.execute("SET disabled_optimizers = ?", [before])
        else:
            con.execute("RESET disabled_optimizers")


def _load(con: duckdb.DuckDBPyConnection, path: str, schema: str, max_chars: int, default_source: str,
          split: str, ingest_id: int, lines: int) -> FastResult:
    query, args = fast_select(schema, max_chars, default_source)
    query = query.replace("{max_object}", str(min(MAX_OBJECT_BYTES, line_cap(con))))
    params = {"path": path, **args}
    if lines <= SMALL_FILE_ROWS:
        return _load_small(con, path, query, params, schema, max_chars, default_source, split, ingest_id, lines)
    try:  # pass 1, narrow: which rows are clean, and which clean rows may repeat one another
        con.execute(f"""CREATE TEMP TABLE fast_keys AS SELECT origin_row, source, clean,
                          CASE WHEN clean THEN hash(source, prompt, response) END AS h FROM ({query})""", params)
    except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.OutOfMemoryException,
            duckdb.IOException) as e:
        raise Unsuitable(str(e)) from None
    counts = con.execute("SELECT count(*), count(*) FILTER (WHERE NOT clean) FROM fast_keys").fetchone()
    assert counts is not None
    if int(counts[0]) != lines:
        raise Unsuitable(f"{counts[0]} records in {lines} lines (blank lines)")
    con.execute("""CREATE TEMP TABLE fast_twins AS SELECT origin_row FROM fast_keys WHERE h IN (
                     SELECT h FROM fast_keys WHERE clean GROUP BY h HAVING count(*) > 1)""")
    hard = int(counts[1]) > 0
    if hard:
        _normalise_hard_rows(con, path, schema, max_chars, default_source, split)
    sources = [str(r[0]) for r in con.execute(
        "SELECT DISTINCT source FROM fast_keys WHERE clean" + (
            " UNION SELECT DISTINCT source FROM norm WHERE reason IS NULL" if hard else "") + " ORDER BY 1").fetchall()]
    stored = _stored_filter(con, sources, split, ingest_id)
    twins = con.execute("SELECT count(*) FROM fast_twins").fetchone()
    insert = f"""INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars,
                                          origin, origin_row, ingest_id)
                 SELECT source, $split, prompt, response, NULL, content_hash, n_chars, $path, origin_row, $id
                 FROM (SELECT *, md5(prompt || chr(31) || response) AS content_hash FROM ({query}) WHERE clean
                       AND origin_row {{twins}} (SELECT origin_row FROM fast_twins)) {stored}"""
    params.update(split=split, id=ingest_id)
    # pass 2: every clean row whose content no other row of the file shares (nearly all): straight in, so DuckDB
    # writes its row groups to the store as they fill; nothing is deleted afterwards (a delete would make the commit
    # rewrite them all)
    con.execute(insert.replace("{twins}", "NOT IN"), params)
    if twins and twins[0]:  # pass 3: the first row of each content among the rows that share one
        con.execute(insert.replace("{twins}", "IN") + " QUALIFY row_number() OVER ("
                    "PARTITION BY source, content_hash ORDER BY origin_row) = 1", params)
    if hard:
        _store_hard_rows(con, path, ingest_id, stored)
    return _count(con, path, default_source, ingest_id, lines, hard)


def _load_small(con: duckdb.DuckDBPyConnection, path: str, query: str, params: dict, schema: str, max_chars: int,
                default_source: str, split: str, ingest_id: int, lines: int) -> FastResult:
    """One pass inserts every clean row but the repeats of an identical earlier line; any other duplicate is deleted
    again.

    A delete is what costs here: the rows it touches in row groups already written make the commit write them again
    (0.6-1.3 s for a file of 233,000 rows, more than the rest of its commit and a third of its insert). DuckDB keeps
    an insert of at most a row group (:data:`CHECKPOINT_ROWS`) in memory until the commit, so deleting from it costs
    nothing; in a bigger file most duplicates in real data are the same line again, so they are found on the lines
    first (:func:`_line_twins`, two cheap reads of the file as text) and never inserted. Only a repeat of the same
    content written differently (other extra fields, key order, escapes) or already stored by another ingest is
    inserted and deleted. A file of more than :data:`SMALL_FILE_ROWS` lines finds its duplicates before it inserts.
    """
    twins = _line_twins(con, path, lines) if lines > TWINS_FROM_LINES else 0
    skip = " AND origin_row NOT IN (SELECT origin_row FROM fast_line_twins)" if twins else ""
    try:
        got = con.execute(
            f"""INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars,
                                         origin, origin_row, ingest_id)
                SELECT source, $split, prompt, response, NULL, md5(prompt || chr(31) || response), n_chars, $path,
                       origin_row, $id
                FROM ({query}) WHERE clean{skip}""", {**params, "split": split, "id": ingest_id}).fetchone()
    except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.OutOfMemoryException,
            duckdb.IOException) as e:
        raise Unsuitable(str(e)) from None
    hard = (int(got[0]) if got else 0) != lines - twins
    if hard:  # some row was not clean (or the file has blank lines): find out which
        con.execute(f"CREATE TEMP TABLE fast_keys AS SELECT origin_row, source, clean FROM ({query})", params)
        row = con.execute("SELECT count(*) FROM fast_keys").fetchone()
        if not row or int(row[0]) != lines:
            raise Unsuitable(f"{row[0] if row else 0} records in {lines} lines (blank lines)")
        _normalise_hard_rows(con, path, schema, max_chars, default_source, split)
        con.execute(
            """INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars, origin,
                                         origin_row, ingest_id)
               SELECT source, split, prompt, response, chat_messages, content_hash, n_chars, ?, origin_row, ?
               FROM norm WHERE reason IS NULL""", [path, ingest_id])
        con.execute(
            "INSERT INTO rejects (origin, origin_row, source, split, reason, raw, ingest_id) "
            "SELECT ?, origin_row, source, split, reason, raw, ? FROM norm WHERE reason IS NOT NULL",
            [path, ingest_id])
    sources = [str(r[0]) for r in con.execute(
        "SELECT DISTINCT source FROM example_rows WHERE ingest_id = ? ORDER BY 1", [ingest_id]).fetchall()]
    stored = _stored_filter(con, sources, split, ingest_id).replace("NOT IN", "IN")
    con.execute(
        f"""CREATE TEMP TABLE dup AS
            WITH mine AS (SELECT source, split, content_hash, origin_row FROM example_rows WHERE ingest_id = $id)
            SELECT m.origin_row, m.source FROM mine m JOIN (
                SELECT source, content_hash, min(origin_row) AS first FROM mine GROUP BY ALL HAVING count(*) > 1) f
              ON m.source = f.source AND m.content_hash = f.content_hash AND m.origin_row <> f.first
            {f'UNION SELECT origin_row, source FROM mine {stored}' if stored else ''}""", {"id": ingest_id})
    if twins:  # a clean line's repeats are its duplicates (a repeat of a hard line is hard, and was decided above)
        clean = "" if not hard else " WHERE t.origin_row IN (SELECT origin_row FROM fast_keys WHERE clean)"
        con.execute(f"""CREATE TEMP TABLE fast_twin_dups AS SELECT t.origin_row, e.source FROM fast_line_twins t
                        JOIN example_rows e ON e.ingest_id = $id AND e.origin_row = t.first_row{clean}""",
                    {"id": ingest_id})
    dups = con.execute("SELECT count(*) FROM dup").fetchone()
    if dups and dups[0]:
        con.execute("DELETE FROM example_rows WHERE ingest_id = ? AND origin_row IN (SELECT origin_row FROM dup)",
                    [ingest_id])
    if twins:  # counted as duplicates after the delete, which they must not join (they were never stored)
        con.execute("INSERT INTO dup SELECT * FROM fast_twin_dups")
    return _count(con, path, default_source, ingest_id, lines, hard, small=True)


def _line_twins(con: duckdb.DuckDBPyConnection, path: str, lines: int) -> int:
    """``fast_line_twins (origin_row, first_row)``: every line that repeats an earlier line of the file byte for
    byte, and that earlier line's number; returns how many. Zero (and no repeat left out of the insert) when the
    file has a blank line, since ``read_json`` numbers the records past it differently from the lines.

    The first read keeps only the 64-bit hashes that occur more than once (a few percent of the rows); the second
    compares the lines of those hashes as text, so a hash collision never makes two different lines twins.
    """
    text = lines_relation(con, path, min(line_cap(con), 2 * MAX_OBJECT_BYTES))
    try:  # a line the reader refuses fails the transaction: the general path says what is wrong with it
        con.execute(f"""CREATE TEMP TABLE fast_line_hashes AS
                        SELECT hash(line) AS h, count(*) AS n, bool_or({blank('line')}) AS has_blank
                        FROM {text} GROUP BY 1 HAVING count(*) > 1 OR bool_or({blank('line')})""")
    except (duckdb.InvalidInputException, duckdb.OutOfMemoryException, duckdb.IOException) as e:
        raise Unsuitable(str(e)) from None
    row = con.execute("SELECT count(*) FILTER (WHERE has_blank), coalesce(sum(n - 1), 0) FROM fast_line_hashes"
                      ).fetchone()
    if not row or row[0] or not row[1]:
        con.execute("DROP TABLE fast_line_hashes")
        return 0
    con.execute(f"""CREATE TEMP TABLE fast_line_twins AS SELECT origin_row, first_row FROM (
                      SELECT origin_row, min(origin_row) OVER (PARTITION BY line) AS first_row FROM (
                        SELECT row_number() OVER () AS origin_row, line FROM {text})
                      WHERE hash(line) IN (SELECT h FROM fast_line_hashes))
                    WHERE origin_row <> first_row""")
    con.execute("DROP TABLE fast_line_hashes")
    n = con.execute("SELECT count(*), coalesce(max(origin_row), 0) FROM fast_line_twins").fetchone()
    if not n or int(n[1]) > lines:
        con.execute("DROP TABLE fast_line_twins")
        return 0
    return int(n[0])


def _normalise_hard_rows(con: duckdb.DuckDBPyConnection, path: str, schema: str, max_chars: int,
                         default_source: str, split: str) -> None:
    """``norm``: the rows that were not clean, read again as lines and normalised by the general path's SQL."""
    cap = min(line_cap(con), 2 * MAX_OBJECT_BYTES)  # every record was at most MAX_OBJECT_BYTES
    try:
        con.execute(
            f"""CREATE TEMP TABLE raw AS SELECT origin_row, line, NULL::VARCHAR AS pre_reason FROM (
                  SELECT row_number() OVER () AS origin_row, line FROM {lines_relation(con, path, cap)})
                WHERE origin_row IN (SELECT origin_row FROM fast_keys WHERE NOT clean)""")
    except duckdb.InvalidInputException as e:
        raise_if_line_too_long(e, Path(path), retry=True)
        raise
    norm, norm_args = normalized_select(schema, max_chars, default_source, split)
    con.execute(f"CREATE TEMP TABLE norm AS {norm}", norm_args)


def _store_hard_rows(con: duckdb.DuckDBPyConnection, path: str, ingest_id: int, stored: str) -> None:
    """The hard rows the general path keeps (unless an earlier row of the file or a stored row has their content),
    and its rejects. A kept hard row can share its content with a clean row further down the file (``"input":
    "42"`` and an instruction ending in ``42``): that clean row is then the duplicate, and goes."""
    con.execute(
        f"""INSERT INTO example_rows (source, split, prompt, response, chat_messages, content_hash, n_chars, origin,
                                      origin_row, ingest_id)
            SELECT source, split, prompt, response, chat_messages, content_hash, n_chars, $path, origin_row, $id
            FROM (SELECT * FROM norm n WHERE reason IS NULL AND NOT EXISTS (
                    SELECT 1 FROM example_rows e WHERE e.ingest_id = $id AND e.source = n.source
                      AND e.content_hash = n.content_hash AND e.origin_row < n.origin_row)) {stored}
            QUALIFY row_number() OVER (PARTITION BY source, content_hash ORDER BY origin_row) = 1""",
        {"path": path, "id": ingest_id})
    later = con.execute(
        """SELECT count(*) FROM example_rows e WHERE e.ingest_id = $id AND EXISTS (
             SELECT 1 FROM example_rows f WHERE f.ingest_id = $id AND f.source = e.source
               AND f.content_hash = e.content_hash AND f.origin_row < e.origin_row)""", {"id": ingest_id}).fetchone()
    if later and later[0]:
        con.execute(
            """DELETE FROM example_rows WHERE ingest_id = $id AND origin_row IN (
                 SELECT e.origin_row FROM example_rows e WHERE e.ingest_id = $id AND EXISTS (
                   SELECT 1 FROM example_rows f WHERE f.ingest_id = $id AND f.source = e.source
                     AND f.content_hash = e.content_hash AND f.origin_row < e.origin_row))""", {"id": ingest_id})
    con.execute(
        "INSERT INTO rejects (origin, origin_row, source, split, reason, raw, ingest_id) "
        "SELECT ?, origin_row, source, split, reason, raw, ? FROM norm WHERE reason IS NOT NULL", [path, ingest_id])


def stored_keys(sources: list[str], split: str) -> str:
    """SQL of the keys ``(source, split, content_hash)`` stored for ``sources`` in ``split`` by other ingests than
    ``$id``. The names are literals (source names are validated; split is one of three), so DuckDB skips the row
    groups of every other source by their min/max instead of reading the whole table's hashes."""
    names = ", ".join("'" + s.replace("'", "''") + "'" for s in sources) or "NULL"
    return (f"SELECT DISTINCT source, split, content_hash FROM example_rows "
            f"WHERE split = '{split.replace(chr(39), '')}' AND source IN ({names}) AND ingest_id IS DISTINCT FROM $id")


def _stored_filter(con: duckdb.DuckDBPyConnection, sources: list[str], split: str, ingest_id: int) -> str:
    """A WHERE clause leaving out rows whose content another ingest already stored in their source and split (empty
    when none stored a row of these sources in this split: a new source skips the check)."""
    names = ", ".join("'" + s.replace("'", "''") + "'" for s in sources) or "NULL"
    where = (f"split = '{split.replace(chr(39), '')}' AND source IN ({names}) "
             f"AND ingest_id IS DISTINCT FROM {int(ingest_id)}")
    row = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM example_rows WHERE {where} LIMIT 1)").fetchone()
    if not row or not row[0]:
        return ""
    return (f"WHERE source || chr(31) || content_hash NOT IN (SELECT source || chr(31) || content_hash "
            f"FROM example_rows WHERE {where})")


def _count(con: duckdb.DuckDBPyConnection, path: str, default_source: str, ingest_id: int, lines: int,
           hard: bool, small: bool = False) -> FastResult:
    """Rows read, kept, duplicates and rejects, per source (into ``fast_groups`` for the ledger) and in all. The
    valid rows (kept or duplicates) are the clean ones and the hard ones the general path keeps; a small file's
    valid rows are those it kept plus the duplicates it deleted (``dup``)."""
    if small:
        valid_sql = "SELECT source FROM example_rows WHERE ingest_id = $id UNION ALL SELECT source FROM dup"
    else:
        valid_sql = ("SELECT source FROM fast_keys WHERE clean"
                     + (" UNION ALL SELECT source FROM norm WHERE reason IS NULL" if hard else ""))
    valid = dict(con.execute(f"SELECT source, count(*) FROM ({valid_sql}) GROUP BY 1",
                             {"id": ingest_id} if small else {}).fetchall())
    kept = dict(con.execute("SELECT source, count(*) FROM example_rows WHERE ingest_id = ? GROUP BY 1",
                            [ingest_id]).fetchall())
    reasons = {str(k): int(v) for k, v in con.execute(
        "SELECT reason, count(*) FROM rejects WHERE ingest_id = ? GROUP BY 1 ORDER BY 2 DESC", [ingest_id]).fetchall()}
    rejected = sum(reasons.values())
    n_valid, n_kept = sum(valid.values()), sum(kept.values())
    if n_valid + rejected != lines or set(kept) - set(valid):  # every line is a row or a reject: a bug otherwise
        raise RuntimeError(f"{path}: fast ingest counted {n_valid} rows and {rejected} rejects in {lines} lines")
    groups = {str(s): [int(kept.get(s, 0)), int(n) - int(kept.get(s, 0)), 0] for s, n in valid.items()}
    if rejected:
        groups.setdefault(default_source, [0, 0, 0])[2] += rejected
    con.execute("CREATE TEMP TABLE fast_groups (source VARCHAR, kept BIGINT, duplicates BIGINT, rejected BIGINT)")
    con.executemany("INSERT INTO fast_groups VALUES (?, ?, ?, ?)", [[s, *g] for s, g in sorted(groups.items())])
    return FastResult(lines, n_kept, n_valid - n_kept, rejected, sorted(str(s) for s in valid), reasons)
