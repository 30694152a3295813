"""Bad input: exit code 2, one line naming the problem and the fix, and nothing stored is changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()


def _digest(db: Path) -> str:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT example_id FROM examples ORDER BY 1").fetchall()
        rej = con.execute("SELECT count(*) FROM rejects").fetchall()
    finally:
        con.close()
    return hashlib.sha256(repr((rows, rej)).encode()).hexdigest()


@pytest.fixture
def db(tmp_path, corpus):
    path = tmp_path / "c.duckdb"
    res = runner.invoke(app, ["ingest", str(corpus), "--db", str(path)])
    assert res.exit_code == 0, res.output
    return path


def _fails_cleanly(args: list[str], db: Path, expect: str) -> str:
    before = _digest(db)
    res = runner.invoke(app, args)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    assert expect in lines[0], lines[0]
    assert _digest(db) == before
    return lines[0]


def test_missing_file(tmp_path, db):
    _fails_cleanly(["ingest", str(tmp_path / "nope.jsonl"), "--db", str(db)], db, "no such file")


def test_empty_file(tmp_path, db):
    (tmp_path / "empty.jsonl").write_text("")
    _fails_cleanly(["ingest", str(tmp_path / "empty.jsonl"), "--db", str(db)], db, "empty")


def test_folder_with_nothing_readable(tmp_path, db):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    _fails_cleanly(["ingest", str(tmp_path / "docs"), "--db", str(db)], db, "no readable files")


def test_unknown_format(tmp_path, db):
    (tmp_path / "data.xlsx").write_text("x")
    _fails_cleanly(["ingest", str(tmp_path / "data.xlsx"), "--db", str(db)], db, "unknown format")


def test_schema_cannot_be_detected(tmp_path, db):
    write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": "x"}])
    line = _fails_cleanly(["ingest", str(tmp_path / "odd.jsonl"), "--db", str(db)], db, "cannot detect")
    assert "--schema" in line


@pytest.mark.parametrize("name", ["x'; DROP TABLE examples; --", 'we"ird', "a b"])
def test_source_name_with_quotes_or_sql(tmp_path, db, name):
    f = write_jsonl(tmp_path / "ok.jsonl", alpaca_rows("q", 3))
    _fails_cleanly(["ingest", str(f), "--source", name, "--db", str(db)], db, "not a valid source name")


def test_file_that_is_not_duckdb(tmp_path, corpus):
    fake = tmp_path / "fake.duckdb"
    fake.write_text("this is not a database")
    res = runner.invoke(app, ["ingest", str(corpus), "--db", str(fake)])
    assert res.exit_code == 2 and "not a DuckDB database" in res.output
    assert fake.read_text() == "this is not a database"


def test_weights_that_do_not_match_the_database(tmp_path, db):
    run = tmp_path / "run"
    run.mkdir()
    (run / "weights.json").write_text(json.dumps({"method": "m", "sources": {"math": 0.5, "elsewhere": 0.5}}))
    _fails_cleanly(["resample", str(run), "--budget", "10", "--db", str(db)], db, "'elsewhere' is not in the database")


def test_second_process_gets_a_lock_message(tmp_path, db):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ok', flush=True); "
                               "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        write_jsonl(tmp_path / "x.jsonl", alpaca_rows("z", 2))
        start = time.time()
        res = runner.invoke(app, ["ingest", str(tmp_path / "x.jsonl"), "--db", str(db)])
        assert res.exit_code == 2 and "in use by another curate process" in res.output, res.output
        assert time.time() - start < 10
    finally:
        holder.kill()
        holder.wait()
