"""Ingest: formats, schemas, rejects with reasons, duplicates, idempotence and the accounting invariant."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.db import open_db
from curate.errors import DataError
from curate.ingest import ingest_paths
from tests.conftest import alpaca_rows, write_jsonl


def _ingest(db: Path, paths: list[Path], **kw):
    with open_db(db) as con:
        return ingest_paths(con, paths, **kw)


def _rows(db: Path, sql: str, args: list | None = None):
    with open_db(db, read_only=True) as con:
        return con.execute(sql, args or []).fetchall()


def test_folder_one_source_per_file_and_schemas(tmp_path, corpus):
    db = tmp_path / "c.duckdb"
    reports = _ingest(db, [corpus])
    assert {r.origin.split("/")[-1]: r.schema for r in reports} == {
        "chat.jsonl": "sharegpt", "code.jsonl": "prompt_response", "math.jsonl": "alpaca"}
    assert dict(_rows(db, "SELECT source, count(*) FROM examples GROUP BY 1")) == {"math": 30, "chat": 20, "code": 10}
    prompt, response, messages = _rows(db, "SELECT prompt, response, messages FROM examples WHERE source='chat' "
                                           "ORDER BY origin_row LIMIT 1")[0]
    assert (prompt, response) == ("hi 0", "hello 0")
    assert json.loads(messages) == [{"role": "user", "content": "hi 0"}, {"role": "assistant", "content": "hello 0"}]


def test_rejects_have_reasons_and_accounting_holds(tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": "", "output": "b"},  # duplicate
        "{not json",
        {"instruction": "q", "output": 5},
        {"instruction": "q", "output": "   "},
        {"output": "no instruction"},
        {"instruction": "long", "output": "x" * 500},
        {"instruction": "ok", "input": "ctx", "output": "fine"},
        {"instruction": "q", "output": "\n\t "},
        {"instruction": "q2", "output": " kept despite the leading space"},
        "   ",  # a blank line is not a row
    ])
    (r,) = _ingest(tmp_path / "c.duckdb", [f], max_chars=100)
    assert (r.rows_read, r.kept, r.duplicates, r.rejected) == (10, 3, 1, 6)
    assert r.rows_read == r.kept + r.duplicates + r.rejected
    reasons = dict(_rows(tmp_path / "c.duckdb", "SELECT origin_row, reason FROM rejects"))
    assert reasons == {3: "malformed JSON", 4: "field output is not a string", 5: "empty response",
                       6: "missing field instruction", 7: "row over --max-chars", 9: "empty response"}
    assert _rows(tmp_path / "c.duckdb", "SELECT prompt FROM examples WHERE origin_row = 8") == [("ok\n\nctx",)]


def test_invalid_utf8_line_is_a_reject_not_a_failure(tmp_path):
    f = tmp_path / "bytes.jsonl"
    f.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff\xfe", "response": "c"}\n')
    (r,) = _ingest(tmp_path / "c.duckdb", [f])
    assert (r.kept, r.rejected, r.reasons) == (1, 1, {"invalid UTF-8": 1})


def test_invalid_utf8_past_the_schema_sample_is_a_reject_too(tmp_path):
    """The bad byte sits after the rows read for schema detection, so DuckDB meets it mid-ingest."""
    good = b"".join(b'{"prompt": "q%d", "response": "a"}\n' % i for i in range(2500))
    f = tmp_path / "late.jsonl"
    f.write_bytes(good + b'{"prompt": "\xff", "response": "c"}\n{"prompt": "last", "response": "d"}\n')
    (r,) = _ingest(tmp_path / "c.duckdb", [f])
    assert (r.rows_read, r.kept, r.rejected, r.reasons) == (2502, 2501, 1, {"invalid UTF-8": 1})
    assert _rows(tmp_path / "c.duckdb", "SELECT origin_row FROM rejects") == [(2501,)]


def test_same_file_twice_changes_nothing(tmp_path, corpus):
    db = tmp_path / "c.duckdb"
    _ingest(db, [corpus / "math.jsonl"])
    before = _rows(db, "SELECT count(*), (SELECT count(*) FROM ingests) FROM examples")
    (again,) = _ingest(db, [corpus / "math.jsonl"])
    assert again.cached and again.kept == 30
    assert _rows(db, "SELECT count(*), (SELECT count(*) FROM ingests) FROM examples") == before


def test_duplicates_against_stored_rows_are_counted(tmp_path):
    db = tmp_path / "c.duckdb"
    _ingest(db, [write_jsonl(tmp_path / "a.jsonl", alpaca_rows("x", 5))], source="s")
    (r,) = _ingest(db, [write_jsonl(tmp_path / "b.jsonl", alpaca_rows("x", 7))], source="s")
    assert (r.kept, r.duplicates) == (2, 5)


def test_source_column_and_split(tmp_path):
    rows = [{"prompt": f"p{i}", "response": "r", "source": "web" if i % 2 else "books"} for i in range(6)]
    _ingest(tmp_path / "c.duckdb", [write_jsonl(tmp_path / "mix.jsonl", rows)], split="val")
    got = _rows(tmp_path / "c.duckdb", "SELECT source, split, count(*) FROM examples GROUP BY ALL ORDER BY 1")
    assert got == [("books", "val", 3), ("web", "val", 3)]


@pytest.mark.parametrize("fmt", ["json", "parquet", "csv", "hf"])
def test_other_formats_give_the_same_rows(tmp_path, fmt):
    rows = alpaca_rows("f", 12)
    if fmt == "json":
        path = tmp_path / "src.json"
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        path = tmp_path / "src.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        path = tmp_path / "src.csv"
        body = "".join(f'"{r["instruction"]}",,"{r["output"]}"\n' for r in rows)
        path.write_text("instruction,input,output\n" + body)
    else:
        path = tmp_path / "src"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    (r,) = _ingest(tmp_path / "c.duckdb", [path])
    assert (r.fmt, r.schema, r.kept, r.rejected) == (fmt, "alpaca", 12, 0)
    got = _rows(tmp_path / "c.duckdb", "SELECT origin_row, prompt, response FROM examples ORDER BY origin_row")
    assert got == [(i + 1, r["instruction"], r["output"]) for i, r in enumerate(rows)]


def test_openai_messages_and_text(tmp_path):
    msgs = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]}]
    _ingest(tmp_path / "c.duckdb", [write_jsonl(tmp_path / "m.jsonl", msgs), write_jsonl(
        tmp_path / "t.jsonl", [{"text": "plain document"}])])
    got = dict(_rows(tmp_path / "c.duckdb", "SELECT source, [prompt, response] FROM examples"))
    assert got == {"m": ["be brief\n\nq", "a"], "t": ["", "plain document"]}


def test_failed_file_rolls_back_alone(tmp_path, corpus):
    db = tmp_path / "c.duckdb"
    _ingest(db, [corpus / "math.jsonl"])
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"}, {broken')
    with pytest.raises(DataError, match="bad.json"):
        _ingest(db, [bad])
    assert _rows(db, "SELECT count(*) FROM examples") == [(30,)]
    assert _rows(db, "SELECT count(*) FROM ingests") == [(1,)]
