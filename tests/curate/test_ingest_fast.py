"""The fast JSONL path (curate.ingest.fast) stores exactly what the general path stores: the same rows, ids, content
hashes, rejects (reasons, raw text, line numbers), ledger and reports, on files full of the cases where DuckDB's JSON
reader and its JSON functions could disagree. And the stored content of a fixed fixture is pinned by a checksum
taken before the fast path existed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import curate.ingest.fast as fast
from curate.db import open_db
from curate.ingest import ingest_paths

TRICKY = [
    {"instruction": "plain", "input": "", "output": "answer"},
    {"instruction": "with input", "input": "ctx", "output": "answer 2"},
    {"instruction": "numeric answer", "output": "42"},  # a string that reads like a number: decided exactly
    {"instruction": "number", "output": 42},
    {"instruction": "float", "output": 4.5e3},
    {"instruction": "bool", "output": True},
    {"instruction": "bool string", "output": "true"},
    {"instruction": "object", "output": {"k": 1}},
    {"instruction": "object string", "output": "{\"k\": 1}"},
    {"instruction": "array", "output": [1, "x"]},
    {"instruction": "array string", "output": "[not json"},
    {"instruction": "null output", "output": None},
    {"instruction": None, "output": "null instruction"},
    {"instruction": "null input", "input": None, "output": "kept"},
    {"instruction": "number input", "input": 7, "output": "rejected"},
    {"output": "missing instruction"},
    {"instruction": "missing output"},
    {"instruction": "empty", "output": ""},
    {"instruction": "blank", "output": " \t\n "},
    {"instruction": "leading space", "output": " kept"},
    {"instruction": "long", "output": "x" * 300},
    {"instruction": "escapes \"q\" \\ \u00e9 \u2028 \ud83d\ude00 \t tab", "input": "line\nbreak", "output": "a/b\\/c"},
    {"instruction": "source", "output": "s", "source": "other.src-1"},
    {"instruction": "bad source", "output": "s", "source": "bad name!"},
    {"instruction": "numeric source", "output": "s", "source": 5},
    {"instruction": "numeric-looking source", "output": "s", "source": "2024"},
    {"instruction": "null source", "output": "s", "source": None},
    {"instruction": "extra fields", "output": "kept", "meta": {"a": [1, 2]}, "id": 3},
    {"instruction": "plain", "input": "", "output": "answer"},  # a repeat of the first row
    {"instruction": "source", "output": "s", "source": "other.src-1"},  # a repeat in the other source
    {"instruction": "  ", "output": "blank instruction is fine"},
    {"instruction": "NaN", "output": "nan"},
    {"instruction": "inf", "output": "-Infinity"},
    {"instruction": "q", "input": "42", "output": "y"},  # hard (input reads like a number) ...
    {"instruction": "q\n\n42", "output": "y"},  # ... and this clean row has the same content: the duplicate
    {"instruction": "r\n\n7", "output": "z"},  # a clean row first ...
    {"instruction": "r", "input": "7", "output": "z"},  # ... then a hard one with its content
    {"instruction": "q", "input": "42", "output": "y"},  # a hard row repeated
]


def _write(path: Path, rows: list, *, eol: str = "\n", bom: bool = False, last_eol: bool = True) -> Path:
    text = eol.join(r if isinstance(r, str) else json.dumps(r) for r in rows) + (eol if last_eol else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def _files(d: Path) -> dict[str, tuple[Path, dict]]:
    d.mkdir()
    pr = [{"prompt": "p", "response": "r"}, {"prompt": "p2", "completion": "c"}, {"prompt": "p3"},
          {"prompt": "p4", "response": None, "completion": "from completion"}, {"prompt": "p5", "response": 5},
          {"prompt": "p6", "response": "r6", "completion": 6}, {"prompt": 1, "response": "x"},
          {"prompt": "", "response": "empty prompt"}, {"prompt": "p", "response": "r"}]
    text = [{"text": "t1"}, {"text": ""}, {"text": 3}, {"text": "t1"}, {"text": "ok", "source": "txt2"}, {"other": 1}]
    return {
        "tricky": (_write(d / "tricky.jsonl", TRICKY), {"max_chars": 200}),
        "crlf_bom": (_write(d / "crlf.jsonl", TRICKY[:12], eol="\r\n", bom=True, last_eol=False), {}),
        "no_eol": (_write(d / "noeol.jsonl", TRICKY[:5], last_eol=False), {}),
        "blank_lines": (_write(d / "blank.jsonl", [json.dumps(TRICKY[0]), "", "   ", json.dumps(TRICKY[1])]), {}),
        "trailing_blank": (_write(d / "tb.jsonl", [json.dumps(TRICKY[0]), json.dumps(TRICKY[1]), "  "],
                                  last_eol=False), {}),
        "dup_keys": (_write(d / "dupkey.jsonl", ['{"instruction": "a", "instruction": "b", "output": "c"}',
                                                 json.dumps(TRICKY[0])]), {}),
        "prompt_response": (_write(d / "pr.jsonl", pr), {}),
        "text": (_write(d / "text.jsonl", text), {}),
        "all_rejected": (_write(d / "allrej.jsonl", [{"instruction": "x", "output": 1}] * 3), {}),
        "schema_text_on_alpaca": (_write(d / "alp_as_text.jsonl", TRICKY[:6]), {"schema": "text"}),
    }


def _stored(db: Path, root: Path) -> tuple:
    with open_db(db, read_only=True) as con:
        def rows(sql: str) -> list[str]:
            return sorted(repr(r) for r in con.execute(sql).fetchall())
        strip = f"replace(origin, '{root}', '')"
        return (rows(f"SELECT * EXCLUDE (origin), {strip} FROM examples"),
                rows(f"SELECT * EXCLUDE (origin), {strip} FROM rejects"),
                rows(f"SELECT * EXCLUDE (origin, path, ingested_at), {strip} FROM ingests"))


def _ingest_all(tmp: Path, name: str, general: bool, monkeypatch) -> tuple:
    root = tmp / name
    root.mkdir()
    files = _files(root / "in")
    outcomes = []
    with monkeypatch.context() as m:
        if general:
            def refuse(*args, **kwargs):
                raise fast.Unsuitable("test: general path only")
            m.setattr(fast, "load_fast", refuse)
        with open_db(root / "c.duckdb") as con:
            for key, (path, opts) in files.items():
                try:
                    (r,) = ingest_paths(con, [path], **opts)
                    outcomes.append((key, r.rows_read, r.kept, r.duplicates, r.rejected, r.sources, r.reasons,
                                     r.schema))
                except Exception as e:  # the same error either way
                    outcomes.append((key, type(e).__name__, str(e).replace(str(root), "")))
            # again into the same source: every row is a stored duplicate; and a re-ingest with another --max-chars
            for key in ("tricky", "prompt_response"):
                path, opts = files[key]
                (r,) = ingest_paths(con, [path], source=f"{path.stem}_again", **opts)
                (r2,) = ingest_paths(con, [path], source=f"{path.stem}_again", **{**opts, "max_chars": 50})
                outcomes.append((key, "again", r.kept, r.duplicates, r2.kept, r2.duplicates, r2.rejected, r2.replaced))
    return outcomes, _stored(root / "c.duckdb", root)


@pytest.mark.parametrize(("small_rows", "twins_from"), [(10**9, 10**9), (10**9, 0), (0, 0)],
                         ids=["one-pass", "line-twins", "keys-first"])
def test_fast_path_stores_exactly_what_the_general_path_stores(tmp_path, monkeypatch, small_rows, twins_from):
    """Every way the fast path goes: a file under a row group in one pass (duplicates deleted after), a bigger one
    whose repeated lines are left out of the insert, and one so big that it finds its duplicates before it
    inserts."""
    monkeypatch.setattr(fast, "SMALL_FILE_ROWS", small_rows)
    monkeypatch.setattr(fast, "TWINS_FROM_LINES", twins_from)
    used: list[str] = []
    real = fast.load_fast

    def spy(con, path, *args, **kwargs):
        got = real(con, path, *args, **kwargs)
        used.append(Path(path).name)
        return got

    monkeypatch.setattr(fast, "load_fast", spy)
    fast_out, fast_db = _ingest_all(tmp_path, "fast", False, monkeypatch)
    general_out, general_db = _ingest_all(tmp_path, "general", True, monkeypatch)
    assert fast_out == general_out
    assert fast_db == general_db
    # the fast path did the work wherever it can: not for blank lines or duplicate keys (a file with no row kept
    # goes through it and then to the general path, for its message)
    assert {"tricky.jsonl", "crlf.jsonl", "noeol.jsonl", "pr.jsonl", "text.jsonl", "allrej.jsonl"} <= set(used)
    assert not {"blank.jsonl", "tb.jsonl", "dupkey.jsonl"} & set(used)


@pytest.mark.parametrize(("small_rows", "twins_from"), [(10**9, 10**9), (10**9, 0), (0, 0)],
                         ids=["one-pass", "line-twins", "keys-first"])
def test_fast_path_line_numbers_follow_the_file_at_scale(tmp_path, monkeypatch, small_rows, twins_from):
    """Many thousands of rows still get their own line numbers and the general path's hashes, and repeats are found
    however far apart they are."""
    monkeypatch.setattr(fast, "SMALL_FILE_ROWS", small_rows)
    monkeypatch.setattr(fast, "TWINS_FROM_LINES", twins_from)
    n = 60_000
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i % 59_000}", "input": "", "output": f"a{i % 59_000}"})
                            + "\n" for i in range(n)))
    with open_db(tmp_path / "c.duckdb") as con:
        (r,) = ingest_paths(con, [path])
        bad = con.execute("SELECT count(*) FROM examples WHERE prompt <> 'q' || (origin_row - 1) "
                          "OR content_hash <> md5(prompt || chr(31) || response) OR origin_row > 59_000").fetchone()
    assert (r.rows_read, r.kept, r.duplicates, r.rejected) == (n, 59_000, 1_000, 0)
    assert bad == (0,)


def _digest(db: Path, root: Path) -> str:
    return hashlib.sha256(repr(_stored(db, root)).encode()).hexdigest()


# Computed with the general path alone, before the fast path existed (curate at commit 275ad2): the rows, rejects
# and ledger, less paths and times.
PINNED = "db34086c669a8930afc6f4bd34a5a890723ab77cffef4fc9063fc88d422f7c1b"


def test_stored_content_of_the_fixture_is_what_it_was_before_the_fast_path(tmp_path, monkeypatch):
    root = tmp_path / "pin"
    root.mkdir()
    files = _files(root / "in")
    with open_db(root / "c.duckdb") as con:
        for path, opts in files.values():
            try:
                ingest_paths(con, [path], **opts)
            except Exception:  # the all-rejected file fails, as it always did
                pass
    assert _digest(root / "c.duckdb", root) == PINNED


def _repeat_files(d: Path) -> list[Path]:
    """Files whose duplicates are the same line again (never inserted by the fast path), mixed with repeats of the
    same content written differently (inserted, then deleted), rejects repeated, and hard rows repeated."""
    d.mkdir()
    a = {"instruction": "a", "input": "", "output": "x"}
    b = {"instruction": "b", "input": "ctx", "output": "y"}
    rows = [a, b, a, a, {"output": "x", "input": "", "instruction": "a"}, b, {"instruction": "c", "output": "z"}, a]
    clean = _write(d / "clean_repeats.jsonl", rows)
    bad = {"instruction": "d", "output": ""}
    hard = {"instruction": "e", "input": "42", "output": "w"}
    mixed = _write(d / "mixed_repeats.jsonl", [bad, a, bad, hard, a, hard, {"instruction": "e\n\n42", "output": "w"},
                                               b, bad])
    other = _write(d / "repeats_of_stored.jsonl", [b, b, {"instruction": "f", "output": "v"}, b])
    return [clean, mixed, other]


class _Recording:
    """A connection that keeps the text of every statement it runs."""

    def __init__(self, con):
        self._con, self.sql = con, []

    def execute(self, sql, *args, **kwargs):
        self.sql.append(" ".join(sql.split()))
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_repeated_lines_are_duplicates_the_fast_path_never_stores(tmp_path, monkeypatch):
    """In a file bigger than a row group, a line that repeats an earlier one is counted as its duplicate (or rejected
    again) without being inserted: the stored rows, rejects and counts are the general path's, and no delete runs
    for a file whose only duplicates are repeated lines."""
    monkeypatch.setattr(fast, "TWINS_FROM_LINES", 0)  # as if these few lines were many
    out = {}
    for name in ("fast", "general"):
        root = tmp_path / name
        root.mkdir()
        files = _repeat_files(root / "in")
        with monkeypatch.context() as m:
            if name == "general":
                def refuse(*args, **kwargs):
                    raise fast.Unsuitable("test: general path only")
                m.setattr(fast, "load_fast", refuse)
            with open_db(root / "c.duckdb") as con:
                reports = [ingest_paths(con, [f])[0] for f in files[:2]]
                # the third file's rows partly repeat rows already stored in its source
                reports += ingest_paths(con, [files[2]], source="clean_repeats")
                reports += ingest_paths(con, [files[0]], source="clean_again")
        out[name] = ([(r.rows_read, r.kept, r.duplicates, r.rejected, r.sources, r.reasons) for r in reports],
                     _stored(root / "c.duckdb", root))
    assert out["fast"] == out["general"]
    counts = out["fast"][0]
    assert counts[0][:4] == (8, 3, 5, 0)  # a, b, c kept; three repeated lines of a, one of b, one a re-ordered
    assert counts[1][:4] == (9, 3, 3, 3)  # the empty output rejected three times; a, the hard e, b kept
    assert counts[2][:4] == (4, 1, 3, 0)  # b was stored by the first file: only f is new
    assert counts[3][:4] == (8, 3, 5, 0)  # the same file into another source: the same rows
    lines_only = _write(tmp_path / "lines_only.jsonl", [{"instruction": "p", "output": "q"},
                                                        {"instruction": "r", "output": "s"}] * 3)
    with open_db(tmp_path / "rec.duckdb") as con:
        rec = _Recording(con)
        (r,) = ingest_paths(rec, [lines_only])
    assert (r.kept, r.duplicates) == (2, 4)
    assert any("fast_line_twins" in q for q in rec.sql)  # the fast path ran, and found the twins on the lines
    assert not [q for q in rec.sql if q.startswith("DELETE FROM example_rows")]


def test_line_twins_are_exact(tmp_path):
    """Repeated lines are found by text, not by hash alone; a file with a blank line is not numbered by lines."""
    path = _write(tmp_path / "t.jsonl", ['{"a": 1}', '{"b": 2}', '{"a": 1}', '{"a": 1} ', '{"b": 2}'])
    blank_path = _write(tmp_path / "b.jsonl", ['{"a": 1}', "", '{"a": 1}'])
    with open_db(tmp_path / "c.duckdb") as con:
        assert fast._line_twins(con, str(path), 5) == 2  # line 4 has a trailing space: another line
        got = con.execute("SELECT origin_row, first_row FROM fast_line_twins ORDER BY 1").fetchall()
        assert got == [(3, 1), (5, 2)]
        con.execute("DROP TABLE fast_line_twins")
        assert fast._line_twins(con, str(blank_path), 3) == 0


def test_number_starts_cover_every_string_duckdb_reads_as_a_number():
    """The first-character gate in front of ``try_cast`` (fast._ambiguous) only skips strings that cannot be
    numbers: every character a parsable string can start with is in it."""
    import duckdb

    con = duckdb.connect()
    tails = ["1", "1.5", "e5", ".5", " 1", "nf", "NF", "an", "AN", "nfinity", "aN", ""]
    firsts = [*range(1, 128), 0x85, 0xA0, 0x1680, 0x2000, 0x2009, 0x202F, 0x3000, 0xFEFF, 0xFF11]
    for c in firsts:
        for t in tails:
            s = chr(c) + t
            if con.execute("SELECT try_cast(? AS DOUBLE) IS NOT NULL", [s]).fetchone()[0]:
                assert c in fast.NUMBER_STARTS or (c in (73, 78, 105, 110) and ord(t[0]) in (65, 78, 97, 110)), s
