"""`curate drop --source S | --file F`: removes exactly what a source or file brought, in one transaction; runs stay."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import duckdb
import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.badinput.conftest import fails_cleanly
from tests.badinput.conftest import query as _q
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [*map(str, args)])



def _counts(db, source):
    return tuple(_q(db, f"SELECT count(*) FROM {t} WHERE source = ?", [source])[0][0]
                 for t in ("example_rows", "rejects", "ingests"))


@pytest.fixture
def db(tmp_path, corpus):
    """The corpus, a file with rejects, and a recorded run."""
    path = tmp_path / "c.duckdb"
    assert _run("ingest", corpus, "--db", path).exit_code == 0
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*alpaca_rows("m", 4), "{broken", {"instruction": "q"}])
    assert _run("ingest", mixed, "--db", path).exit_code == 0
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO runs VALUES ('r1', 'uniform', '{}', 'done', now(), now(), 'runs/r1')")
    con.execute("INSERT INTO weights VALUES ('r1', 0, 'mixed', 0.5)")
    con.close()
    return path


def test_drop_source_removes_rows_rejects_and_ledger_but_not_runs(tmp_path, db):
    runs_before = _q(db, "SELECT * FROM runs"), _q(db, "SELECT * FROM weights")
    assert _counts(db, "mixed") == (4, 2, 1)
    res = _run("drop", "--source", "mixed", "--db", db)
    assert res.exit_code == 0, res.output
    assert "mixed.jsonl" in res.output and "removed 4 rows and 2 rejects from 1 file" in res.output
    assert _counts(db, "mixed") == (0, 0, 0)
    assert _counts(db, "math") == (30, 0, 1)
    assert (_q(db, "SELECT * FROM runs"), _q(db, "SELECT * FROM weights")) == runs_before
    again = _run("ingest", tmp_path / "mixed.jsonl", "--db", db)  # stored afresh, not "unchanged"
    assert again.exit_code == 0 and "stored" in again.output, again.output
    assert _counts(db, "mixed") == (4, 2, 1)


@pytest.mark.parametrize("how", ["typed", "absolute", "sha256", "sha256-prefix"])
def test_drop_file_removes_only_that_file(tmp_path, db, how):
    extra = write_jsonl(tmp_path / "more.jsonl", alpaca_rows("extra", 5))
    assert _run("ingest", extra, "--source", "math", "--db", db).exit_code == 0
    digest = hashlib.sha256(extra.read_bytes()).hexdigest()  # what sha256sum prints
    key = {"typed": str(extra), "absolute": str(extra.resolve()), "sha256": digest,
           "sha256-prefix": digest[:10]}[how]
    res = _run("drop", "--file", key, "--db", db)
    assert res.exit_code == 0, res.output
    assert "removed 5 rows and 0 rejects from 1 file" in res.output
    assert _counts(db, "math") == (30, 0, 1)


def test_drop_file_by_the_path_as_typed_from_its_folder(tmp_path, db, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rel.jsonl", alpaca_rows("rel", 2))
    assert _run("ingest", "rel.jsonl", "--db", db).exit_code == 0
    res = _run("drop", "--file", "./rel.jsonl", "--db", db)
    assert res.exit_code == 0, res.output
    assert _counts(db, "rel") == (0, 0, 0)


@pytest.mark.parametrize("args, expect", [
    (["--source", "nope"], ["--source 'nope'", "no such source", "math", "curate sources"]),
    (["--file", "nope.jsonl"], ["--file nope.jsonl", "no ingested file matches", "math.jsonl"]),
    (["--file", "deadbeefdeadbeef"], ["no ingested file matches"]),
    ([], ["exactly one of --source", "--file"]),
    (["--source", "math", "--file", "x.jsonl"], ["exactly one of"]),
])
def test_drop_nothing_matching_fails_cleanly(db, args, expect):
    fails_cleanly(["drop", *args, "--db", db], expect, db=db)


def test_drop_from_a_missing_store_does_not_create_one(tmp_path):
    db = tmp_path / "none.duckdb"
    fails_cleanly(["drop", "--source", "x", "--db", db], [str(db), "no such database"], db=db)
    assert not db.exists()


def test_drop_while_another_process_holds_the_store(db):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ok', flush=True); "
                               "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        res = _run("drop", "--source", "math", "--db", db)
        assert res.exit_code == 2 and "in use by another curate process" in res.output, res.output
    finally:
        holder.kill()
        holder.wait()
    assert _counts(db, "math") == (30, 0, 1)


def test_drop_file_warns_about_later_files_that_deduplicated_against_it(tmp_path, db):
    later = write_jsonl(tmp_path / "later.jsonl", alpaca_rows("math", 35))  # 30 repeat math.jsonl
    assert _run("ingest", later, "--source", "math", "--db", db).exit_code == 0
    res = _run("drop", "--file", tmp_path / "corpus" / "math.jsonl", "--db", db)
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and "later.jsonl" in res.output and "ingest it again" in res.output
    assert _counts(db, "math") == (5, 0, 1)


def test_drop_one_source_of_a_multi_source_file_then_reingest_restores_it(tmp_path, db):
    rows = [{"prompt": f"p{i}", "response": "r", "source": "web" if i % 2 else "books"} for i in range(6)]
    f = write_jsonl(tmp_path / "mix.jsonl", rows)
    assert _run("ingest", f, "--db", db).exit_code == 0
    rows_sql = "SELECT source, prompt, example_id FROM examples WHERE source IN ('web', 'books') ORDER BY ALL"
    before = _q(db, rows_sql)
    assert _run("drop", "--source", "web", "--db", db).exit_code == 0
    assert _counts(db, "web") == (0, 0, 0) and _counts(db, "books")[0] == 3
    res = _run("ingest", f, "--db", db)  # not "unchanged": part of what it brought is gone
    assert res.exit_code == 0 and "unchanged" not in res.output, res.output
    assert _counts(db, "web")[0] == 3 and _counts(db, "books")[0] == 3
    assert _q(db, "SELECT sum(rows_read) FROM ingests WHERE origin = ?", [str(f)]) == [(6,)]
    assert _q(db, rows_sql) == before
