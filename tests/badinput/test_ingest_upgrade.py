"""A store written before the ledger knew ingest ids (schema v2) keeps working: re-ingesting a file is still
"unchanged", and `curate drop` removes what an old ingest brought."""

from __future__ import annotations

import hashlib

import duckdb
from typer.testing import CliRunner

from curate.cli import app
from tests.conftest import alpaca_rows, write_jsonl

runner = CliRunner()

V2 = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE example_rows (source VARCHAR NOT NULL, split VARCHAR NOT NULL, prompt VARCHAR, response VARCHAR,
    chat_messages VARCHAR, content_hash VARCHAR NOT NULL, n_chars BIGINT, origin VARCHAR, origin_row BIGINT);
CREATE VIEW examples AS SELECT *, md5(source || chr(31) || split || chr(31) || content_hash) AS example_id,
    prompt || chr(10) || chr(10) || response AS text, chat_messages AS messages FROM example_rows;
CREATE TABLE rejects (origin VARCHAR, origin_row BIGINT, source VARCHAR, split VARCHAR, reason VARCHAR, raw VARCHAR);
CREATE TABLE ingests (file_sha256 VARCHAR, origin VARCHAR, default_source VARCHAR, source VARCHAR, split VARCHAR,
    schema VARCHAR, rows_read BIGINT, kept BIGINT, duplicates BIGINT, rejected BIGINT, ingested_at TIMESTAMP);
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, method VARCHAR, config_json VARCHAR, status VARCHAR,
    created_at TIMESTAMP, finished_at TIMESTAMP, run_dir VARCHAR);
"""


def _v2_store(tmp_path):
    """A v2 store holding a.jsonl (3 rows, 1 reject) as v2's ingest recorded it (key: sha256 of name + bytes)."""
    f = write_jsonl(tmp_path / "a.jsonl", [*alpaca_rows("a", 3), "{bad"])
    legacy = hashlib.sha256(b"a.jsonl" + f.read_bytes()).hexdigest()
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(V2)
    for i in range(3):
        con.execute("INSERT INTO example_rows VALUES ('a', 'train', ?, ?, NULL, md5(?), 20, ?, ?)",
                    [f"a question {i}", f"a answer {i}", str(i), str(f), i + 1])
    con.execute("INSERT INTO rejects VALUES (?, 4, 'a', 'train', 'malformed JSON', '{bad')", [str(f)])
    con.execute("INSERT INTO ingests VALUES (?, ?, 'a', 'a', 'train', 'alpaca', 4, 3, 0, 1, now())", [legacy, str(f)])
    con.execute("INSERT INTO runs VALUES ('r1', 'uniform', '{}', 'done', now(), now(), 'runs/r1')")
    con.close()
    return db, f


def _q(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_v2_store_reingest_is_unchanged(tmp_path):
    db, f = _v2_store(tmp_path)
    res = runner.invoke(app, ["ingest", str(f), "--db", str(db)])
    assert res.exit_code == 0 and "unchanged" in res.output, res.output
    assert _q(db, "SELECT count(*), count(ingest_id) FROM example_rows") == [(3, 3)]
    assert _q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]


def test_v2_store_drop_file_removes_the_old_ingest(tmp_path):
    db, f = _v2_store(tmp_path)
    res = runner.invoke(app, ["drop", "--file", str(f), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "removed 3 rows and 1 reject from 1 file" in res.output
    assert _q(db, "SELECT (SELECT count(*) FROM example_rows), (SELECT count(*) FROM rejects), "
                  "(SELECT count(*) FROM ingests), (SELECT count(*) FROM runs)") == [(0, 0, 0, 1)]
