"""The ingest, sources and rejects tables stay readable at 80 columns: numbers whole, names folded (never cut),
every column with a header; `curate rejects` shows what was not kept without opening DuckDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.badinput.conftest import fails_cleanly
from tests.conftest import alpaca_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]
LONG = "math_algebra_word_problems_from_the_2024_release"


def curate80(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process whose terminal is 80 columns wide (not the width pytest runs in)."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO), "TERM": "dumb"}
    return subprocess.run([sys.executable, "-c", "from curate.cli import app; app()", *map(str, args)], cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def column(output: str, header: str, first: str, marker: str) -> str:
    """The text of a left-aligned column in the row whose cell starts with ``first``, its folded lines joined.

    ``marker`` is a right-aligned numeric column: it has text only on a row's first line, so it marks where the
    next row starts.
    """
    lines = output.splitlines()
    h = next(i for i, ln in enumerate(lines) if header in ln.split() and marker in ln.split())
    x, end = lines[h].index(header), lines[h].index(marker) + len(marker)
    start = next(i for i, ln in enumerate(lines) if i > h and ln[x:].startswith(first))
    parts = []
    for i, ln in enumerate(lines[start:]):
        if i and len(ln) >= end and ln[end - 1] != " ":
            break
        piece = ln[x:].split(" ")[0] if len(ln) > x else ""
        if not piece:
            break
        parts.append(piece)
    return "".join(parts)


def _q(db, sql, args=None):
    con = duckdb.connect(str(db))
    try:
        return con.execute(sql, args or []).fetchall()
    finally:
        con.close()


@pytest.fixture
def big_db(tmp_path):
    """A store whose ledger says 2,000,000 rows for a file with a long name (cheaper than ingesting them)."""
    db = tmp_path / "c.duckdb"
    f = write_jsonl(tmp_path / f"{LONG}.jsonl", alpaca_rows("m", 5))
    assert CliRunner().invoke(app, ["ingest", str(f), "--db", str(db)]).exit_code == 0
    _q(db, "UPDATE ingests SET rows_read = 2000000, kept = 1999990, duplicates = 1000000, rejected = 10, "
           "file_rows = 2000000")
    return db, f


def test_ingest_table_at_80_columns_keeps_numbers_and_names_whole(tmp_path, big_db):
    db, f = big_db
    res = curate80("ingest", f, "--db", db, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert max(map(len, out.splitlines())) <= 80, out
    assert "…" not in out, out
    for n in ("2,000,000", "1,999,990", "1,000,000"):
        assert n in out, out
    head = next(ln for ln in out.splitlines() if "file" in ln.split())
    assert head.split() == ["file", "schema", "sources", "read", "kept", "duplicates", "rejected", "status"]
    assert "unchanged" in out and "already ingested" in out, out
    assert column(out, "sources", LONG[:4], "read") == LONG, out
    assert column(out, "file", LONG[:4], "read") == f"{LONG}.jsonl", out


def test_sources_table_at_80_columns(tmp_path, big_db):
    db, _ = big_db
    res = curate80("sources", "--db", db, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout and "1,000,000" in res.stdout, res.stdout
    assert max(map(len, res.stdout.splitlines())) <= 80
    assert column(res.stdout, "source", LONG[:4], "examples") == LONG, res.stdout


@pytest.fixture
def rejects_db(tmp_path):
    db = tmp_path / "c.duckdb"
    rows = [*alpaca_rows("ok", 1200), "{not json [bold]markup[/bold] " + "z" * 200, {"instruction": "q", "output": 7},
            {"instruction": "q", "output": "  "}, {"output": "x"}]
    f = write_jsonl(tmp_path / f"{LONG}.jsonl", rows)
    assert CliRunner().invoke(app, ["ingest", str(f), "--db", str(db)]).exit_code == 0
    write_jsonl(tmp_path / "clean.jsonl", alpaca_rows("c", 3))
    assert CliRunner().invoke(app, ["ingest", str(tmp_path / "clean.jsonl"), "--db", str(db)]).exit_code == 0
    return db


def test_rejects_lists_file_row_reason_and_raw_start_at_80_columns(tmp_path, rejects_db):
    res = curate80("rejects", "--db", rejects_db, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert max(map(len, out.splitlines())) <= 80, out
    assert "(4 of 4)" in out
    for row in ("1,201", "1,202", "1,203", "1,204"):
        assert row in out, out
    assert "[bold]markup[/bold]" in out  # raw text is shown as it is, never read as markup
    assert "zzz…" in out  # the start of a long line, marked as cut
    origin = str(tmp_path / f"{LONG}.jsonl")
    assert column(out, "file", origin[:4], "row") == origin, out
    words = " ".join(out.split())  # the caption wraps at 80 columns
    assert "by reason:" in words and "malformed JSON x1" in words and "missing field instruction x1" in words


def test_rejects_limit_and_source(tmp_path, rejects_db):
    res = CliRunner().invoke(app, ["rejects", "--limit", "2", "--source", LONG, "--db", str(rejects_db)])
    assert res.exit_code == 0, res.output
    assert "2 of 4" in res.output and "--limit N for more" in res.output


def test_rejects_none_is_one_line(tmp_path, rejects_db):
    res = CliRunner().invoke(app, ["rejects", "--source", "clean", "--db", str(rejects_db)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == [f"{rejects_db}: no rejects of source clean; every row read was kept "
                                               "or was a duplicate"]


@pytest.mark.parametrize("args, expect", [
    (["--source", "nope"], ["--source 'nope'", "no such source", "clean"]),
    (["--limit", "0"], ["--limit", "at least 1"]),
])
def test_rejects_bad_options_fail_cleanly(rejects_db, args, expect):
    fails_cleanly(["rejects", *args, "--db", rejects_db], expect, db=rejects_db)


def test_rejects_without_a_store(tmp_path):
    db = tmp_path / "none.duckdb"
    fails_cleanly(["rejects", "--db", db], [str(db), "no such database"])
    assert not db.exists()
