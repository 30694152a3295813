"""A failed ingest can be corrected: a file that keeps no row stores nothing and says how to fix it; ingesting the
same file with other options is not "unchanged" but replaces what it stored."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.badinput.conftest import fails_cleanly, store_digest
from tests.badinput.conftest import ingest as _ingest
from tests.badinput.conftest import query as _q
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()





def _pr_rows(n):
    return [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(n)]


def test_wrong_schema_stores_nothing_and_names_the_right_one(tmp_path, db):
    f = write_jsonl(tmp_path / "wrong.jsonl", _pr_rows(5))
    fails_cleanly(["ingest", f, "--schema", "alpaca", "--db", db],
                  ["wrong.jsonl", "no row kept", "missing field instruction x5", "--schema prompt_response"], db=db)
    assert _q(db, "SELECT count(*) FROM ingests WHERE origin LIKE '%wrong.jsonl'") == [(0,)]
    res = _ingest(f, "--db", db)  # the correction is not "already ingested, unchanged"
    assert res.exit_code == 0, res.output
    assert "stored" in res.output and "unchanged" not in res.output
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'wrong'") == [(5,)]


def test_integer_parquet_columns_say_cast_to_string(tmp_path, db):
    bad = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"instruction": [1, 2, 3], "output": [4, 5, 6]}), bad)
    fails_cleanly(["ingest", bad, "--db", db], ["ints.parquet", "no row kept", "not a string", "cast it to string"],
                  db=db)
    pq.write_table(pa.table({"instruction": ["1", "2", "3"], "output": ["4", "5", "6"]}), bad)
    res = _ingest(bad, "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'ints'") == [(3,)]


@pytest.mark.parametrize("pretty", [False, True], ids=["one-line", "pretty-printed"])
@pytest.mark.parametrize("schema", ["auto", "alpaca"])
def test_json_array_saved_as_jsonl_says_rename_to_json(tmp_path, db, pretty, schema):
    f = tmp_path / "arr.jsonl"
    f.write_text(json.dumps(alpaca_rows("a", 3), indent=2 if pretty else None))
    fails_cleanly(["ingest", f, "--schema", schema, "--db", db], ["arr.jsonl", "JSON array", "rename it to arr.json"],
                  db=db)
    res = _ingest(f.rename(tmp_path / "arr.json"), "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'arr'") == [(3,)]


def test_lines_that_are_not_objects_say_so(tmp_path, db):
    f = write_jsonl(tmp_path / "nums.jsonl", ["1", "2", '"three"'])
    fails_cleanly(["ingest", f, "--db", db], ["nums.jsonl", "no record is a JSON object", "row 1 is a JSON"], db=db)


def test_every_row_too_long_says_raise_max_chars(tmp_path, db):
    f = write_jsonl(tmp_path / "long.jsonl", [{"instruction": "q", "output": "x" * 300}] * 2)
    fails_cleanly(["ingest", f, "--max-chars", "100", "--db", db], ["long.jsonl", "raise --max-chars", "301"], db=db)
    res = _ingest(f, "--max-chars", "1000", "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'long'") == [(1,)]


def test_only_blank_lines_has_no_rows(tmp_path, db):
    f = tmp_path / "blank.jsonl"
    f.write_text("\n   \n\t\n")
    fails_cleanly(["ingest", f, "--schema", "alpaca", "--db", db], ["blank.jsonl", "has no rows"], db=db)


def test_all_duplicates_is_not_a_failure(tmp_path, db):
    """Rows that repeat stored ones are valid: the file is recorded, with nothing new kept."""
    part = write_jsonl(tmp_path / "again.jsonl", alpaca_rows("math", 10))  # 10 of the 30 stored math rows
    res = _ingest(part, "--source", "math", "--db", db)
    assert res.exit_code == 0, res.output
    assert _q(db, "SELECT kept, duplicates FROM ingests WHERE origin = ?", [str(part)]) == [(0, 10)]


def test_other_schema_replaces_what_the_file_stored(tmp_path, db):
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "text": f"doc {i}"} for i in range(4)]
    f = write_jsonl(tmp_path / "both.jsonl", rows)
    assert _ingest(f, "--db", db).exit_code == 0  # auto: prompt_response
    res = _ingest(f, "--schema", "text", "--db", db)
    assert res.exit_code == 0, res.output
    assert "replaced" in res.output
    assert _q(db, "SELECT prompt, response FROM examples WHERE source = 'both' ORDER BY origin_row") == [
        ("", f"doc {i}") for i in range(4)]
    assert _q(db, "SELECT schema, rows_read FROM ingests WHERE source = 'both'") == [("text", 4)]
    again = _ingest(f, "--schema", "text", "--db", db)
    assert again.exit_code == 0 and "unchanged" in again.output, again.output
    auto = _ingest(f, "--db", db)  # auto takes the file as it is stored
    assert auto.exit_code == 0 and "unchanged" in auto.output, auto.output


def test_explicit_schema_equal_to_detected_is_unchanged(tmp_path, db, corpus):
    before = store_digest(db)
    res = _ingest(corpus / "math.jsonl", "--schema", "alpaca", "--db", db)
    assert res.exit_code == 0 and "unchanged" in res.output, res.output
    assert store_digest(db) == before


def test_other_max_chars_replaces_and_does_not_double_rejects(tmp_path, db):
    f = write_jsonl(tmp_path / "mixed.jsonl", [{"instruction": "q", "output": "x" * 80},
                                               {"instruction": "a", "output": "b"}])
    assert _ingest(f, "--max-chars", "50", "--db", db).exit_code == 0
    assert _q(db, "SELECT count(*) FROM rejects WHERE source = 'mixed'") == [(1,)]
    res = _ingest(f, "--max-chars", "500", "--db", db)
    assert res.exit_code == 0 and "replaced" in res.output, res.output
    assert _q(db, "SELECT count(*) FROM examples WHERE source = 'mixed'") == [(2,)]
    assert _q(db, "SELECT count(*) FROM rejects WHERE source = 'mixed'") == [(0,)]
    assert _q(db, "SELECT sum(rows_read), sum(kept), sum(rejected) FROM ingests WHERE source = 'mixed'") == [(2, 2, 0)]
    no_option = _ingest(f, "--db", db)  # no --max-chars: whatever it was ingested with
    assert no_option.exit_code == 0 and "unchanged" in no_option.output, no_option.output


def test_other_source_is_a_new_ingest_and_says_where_else_it_is(tmp_path, db, corpus):
    res = _ingest(corpus / "code.jsonl", "--source", "code_copy", "--db", db)
    assert res.exit_code == 0, res.output
    assert "also stored as source 'code'" in res.output
    assert dict(_q(db, "SELECT source, count(*) FROM examples WHERE source LIKE 'code%' GROUP BY 1")) == {
        "code": 10, "code_copy": 10}


def test_a_failing_second_file_says_the_first_is_stored(tmp_path):
    db = tmp_path / "c.duckdb"
    good = write_jsonl(tmp_path / "good.jsonl", alpaca_rows("g", 3))
    bad = write_jsonl(tmp_path / "bad.jsonl", _pr_rows(2))
    res = _ingest(good, bad, "--schema", "alpaca", "--db", db)
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "bad.jsonl" in line and "the 1 file before it in this command is stored" in line
    assert _q(db, "SELECT DISTINCT source FROM examples") == [("good",)]
    bad.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows("b", 2)))
    again = _ingest(good, bad, "--schema", "alpaca", "--db", db)
    assert again.exit_code == 0, again.output
    assert "unchanged" in again.output and "stored" in again.output
