"""Bad rows and bad files that ingest already handled: a bad row is a reject with a reason (the rest is kept), a bad
file or flag is one line and exit 2, and the store is never changed by a file that failed."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.badinput.conftest import fails_cleanly, store_digest
from tests.badinput.conftest import ingest as _ingest
from tests.badinput.conftest import query as _q
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()





def test_malformed_json_line_is_a_reject_and_listed(tmp_path, db):
    f = write_jsonl(tmp_path / "m.jsonl", [*alpaca_rows("m", 3), '{"instruction": "q", "output": ', "]["])
    res = _ingest(f, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT origin_row, reason FROM rejects WHERE source = 'm' ORDER BY 1") == [
        (4, "malformed JSON"), (5, "malformed JSON")]
    listed = runner.invoke(app, ["rejects", "--source", "m", "--db", str(db)])
    assert listed.exit_code == 0 and "malformed JSON" in listed.output, listed.output


def test_invalid_utf8_line_is_a_reject(tmp_path, db):
    f = tmp_path / "u.jsonl"
    f.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xc3\x28", "output": "c"}\n')
    res = _ingest(f, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT origin_row, reason FROM rejects WHERE source = 'u'") == [(2, "invalid UTF-8")]
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'u'") == [(1,)]


def test_bom_and_crlf_are_not_part_of_the_rows(tmp_path, db):
    f = tmp_path / "win.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"instruction": "a", "output": "b"}\r\n{"instruction": "c", "output": "d"}\r\n')
    res = _ingest(f, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT prompt, response FROM examples WHERE source = 'win' ORDER BY origin_row") == [
        ("a", "b"), ("c", "d")]


def test_a_huge_row_is_a_reject_with_a_bounded_raw(tmp_path, db):
    f = write_jsonl(tmp_path / "huge.jsonl", [{"instruction": "big", "output": "x" * 5_000_000},
                                              *alpaca_rows("h", 2)])
    res = _ingest(f, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT origin_row, reason, length(raw) FROM rejects WHERE source = 'huge'") == [
        (1, "row over --max-chars", 2000)]
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'huge'") == [(2,)]


@pytest.mark.parametrize("name", ["x'; DROP TABLE example_rows; --", "a/b", ""])
def test_sql_in_a_source_column_is_a_reject(tmp_path, db, name):
    f = write_jsonl(tmp_path / "col.jsonl", [{"prompt": "p", "response": "r", "source": name},
                                             {"prompt": "q", "response": "s"}])
    res = _ingest(f, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT reason FROM rejects WHERE source = 'col'") == [("invalid source name",)]
    assert _q(db, "SELECT count(*) FROM examples") == [(61,)]


def test_a_file_name_that_is_not_a_source_name(tmp_path, db):
    f = write_jsonl(tmp_path / "my data.jsonl", alpaca_rows("d", 2))
    fails_cleanly(["ingest", f, "--db", db], ["my data.jsonl (file name)", "not a valid source name", "--source"],
                  db=db)


@pytest.mark.parametrize("flag, value, expect", [
    ("--split", "bogus", "--split: 'bogus' is not one of train, val, test"),
    ("--schema", "yaml", "--schema: 'yaml' is not one of auto"),
    ("--max-chars", "0", "--max-chars: must be positive"),
])
def test_bad_option_values(tmp_path, db, corpus, flag, value, expect):
    fails_cleanly(["ingest", corpus / "math.jsonl", flag, value, "--db", db], expect, db=db)


def test_db_that_is_a_folder(tmp_path, corpus):
    folder = tmp_path / "store"
    folder.mkdir()
    fails_cleanly(["ingest", corpus, "--db", folder], [str(folder), "is a folder", "--db"], folders=[folder])


def test_db_in_a_folder_that_does_not_exist(tmp_path, corpus):
    db = tmp_path / "no" / "such" / "c.duckdb"
    fails_cleanly(["ingest", corpus, "--db", db], [str(db), "does not exist", "mkdir -p"], folders=[tmp_path])


@pytest.mark.parametrize("command", [["rejects"], ["drop", "--source", "x"], ["sources"]])
def test_db_that_is_not_a_database(tmp_path, command):
    fake = tmp_path / "fake.duckdb"
    fake.write_text("this is not a database")
    fails_cleanly([*command, "--db", fake], [str(fake), "--db"], folders=[tmp_path])


def test_store_from_a_newer_curate(tmp_path, db, corpus):
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    fails_cleanly(["ingest", corpus / "math.jsonl", "--db", db], ["newer curate", "upgrade curate"], db=db)


def test_csv_with_invalid_utf8(tmp_path, db):
    f = tmp_path / "latin.csv"
    f.write_bytes(b"instruction,output\ncaf\xe9,ok\n")
    fails_cleanly(["ingest", f, "--db", db], ["latin.csv", "invalid UTF-8", "re-encode"], db=db)


def test_a_parquet_file_that_is_not_parquet(tmp_path, db):
    f = tmp_path / "broken.parquet"
    f.write_bytes(b"PAR1 but not really")
    fails_cleanly(["ingest", f, "--db", db], ["broken.parquet", "cannot read as parquet"], db=db)


def test_a_failed_first_ingest_leaves_no_store(tmp_path):
    db = tmp_path / "new.duckdb"
    f = write_jsonl(tmp_path / "odd.jsonl", [{"foo": "bar"}])
    fails_cleanly(["ingest", f, "--db", db], ["odd.jsonl", "cannot detect", "--schema"])
    assert not db.exists() and not (tmp_path / "new.duckdb.wal").exists()


def test_a_failed_file_does_not_touch_a_store_with_runs(tmp_path, db):
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO runs VALUES ('r1', 'uniform', '{}', 'done', now(), now(), 'runs/r1')")
    con.close()
    before = store_digest(db)
    f = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": 1, "output": 2}] * 3)
    fails_cleanly(["ingest", f, "--db", db], ["bad.jsonl", "no row kept"], db=db)
    assert store_digest(db) == before
