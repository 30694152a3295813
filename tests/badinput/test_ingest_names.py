"""Two different files with the same name never silently become one source."""

from __future__ import annotations

import duckdb
from typer.testing import CliRunner

from curate.cli import app
from tests.badinput.conftest import fails_cleanly
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()


def _ingest(*args):
    return runner.invoke(app, ["ingest", *map(str, args)])


def _sources(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute("SELECT source || '/' || split, count(*) FROM examples GROUP BY 1").fetchall())
    finally:
        con.close()


def _two_same(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    return (write_jsonl(tmp_path / "d1" / "same.jsonl", alpaca_rows("one", 3)),
            write_jsonl(tmp_path / "d2" / "same.jsonl", alpaca_rows("two", 4)))


def test_same_name_in_one_command_is_refused(tmp_path, corpus):
    db = tmp_path / "c.duckdb"
    assert _ingest(corpus, "--db", db).exit_code == 0
    a, b = _two_same(tmp_path)
    fails_cleanly(["ingest", a, b, "--db", db], [str(a), str(b), "'same'", "--source"], db=db)
    res = _ingest(a, b, "--source", "both", "--db", db)  # on purpose: one source
    assert res.exit_code == 0, res.output
    assert _sources(db)["both/train"] == 7


def test_same_stem_in_one_folder_is_refused(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "same.jsonl", alpaca_rows("one", 2))
    (d / "same.csv").write_text("instruction,output\nq,a\n")
    db = tmp_path / "c.duckdb"
    fails_cleanly(["ingest", d, "--db", db], ["same.csv", "same.jsonl", "--source"], db=db)
    assert not db.exists() or _sources(db) == {}


def test_same_name_across_commands_is_refused(tmp_path):
    db = tmp_path / "c.duckdb"
    a, b = _two_same(tmp_path)
    assert _ingest(a, "--db", db).exit_code == 0
    fails_cleanly(["ingest", b, "--db", db], [str(b), str(a), "--source NAME", "--source same"], db=db)
    assert _ingest(b, "--source", "same_two", "--db", db).exit_code == 0
    assert _ingest(b, "--source", "same", "--db", db).exit_code == 0  # adding to it, said explicitly
    assert _sources(db) == {"same/train": 7, "same_two/train": 4}


def test_same_name_in_another_split_is_that_split(tmp_path):
    """data/train/math.jsonl and data/val/math.jsonl --split val are the train and val rows of one source."""
    db = tmp_path / "c.duckdb"
    a, b = _two_same(tmp_path)
    assert _ingest(a, "--db", db).exit_code == 0
    res = _ingest(b, "--split", "val", "--db", db)
    assert res.exit_code == 0, res.output
    assert _sources(db) == {"same/train": 3, "same/val": 4}


def test_a_file_named_twice_is_read_once(tmp_path):
    db = tmp_path / "c.duckdb"
    d = tmp_path / "data"
    d.mkdir()
    f = write_jsonl(d / "a.jsonl", alpaca_rows("a", 3))
    res = _ingest(d, f, tmp_path / "data" / ".." / "data" / "a.jsonl", "--db", db)
    assert res.exit_code == 0, res.output
    assert res.output.count("a.jsonl") == 1
    assert _sources(db) == {"a/train": 3}


def test_the_same_file_again_from_another_folder_is_unchanged(tmp_path):
    """Identical bytes under the same name are the same ingest, not a clash."""
    db = tmp_path / "c.duckdb"
    a, b = _two_same(tmp_path)
    b.write_bytes(a.read_bytes())
    assert _ingest(a, "--db", db).exit_code == 0
    res = _ingest(b, "--db", db)
    assert res.exit_code == 0 and "unchanged" in res.output, res.output
