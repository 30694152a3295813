"""A database written by schema v1 (examples as a table with generated columns) opens as v2 unchanged."""

from __future__ import annotations

import duckdb

from curate.db import SCHEMA_VERSION, open_db
from curate.ingest import ingest_paths
from tests.conftest import write_jsonl

V1_EXAMPLES = """CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE examples (
    source VARCHAR NOT NULL, split VARCHAR NOT NULL,
    prompt VARCHAR, response VARCHAR, chat_messages VARCHAR,
    content_hash VARCHAR NOT NULL, n_chars BIGINT, origin VARCHAR, origin_row BIGINT,
    example_id VARCHAR GENERATED ALWAYS AS (md5(source || chr(31) || split || chr(31) || content_hash)) VIRTUAL,
    text VARCHAR GENERATED ALWAYS AS (
        CASE WHEN prompt = '' THEN response ELSE prompt || chr(10) || chr(10) || response END) VIRTUAL
);
INSERT INTO examples (source, split, prompt, response, content_hash, n_chars, origin, origin_row)
VALUES ('a', 'train', 'What is 2 + 2?', '4', md5('What is 2 + 2?' || chr(31) || '4'), 15, 'a.jsonl', 1);
"""


def test_v1_database_is_migrated_with_the_same_ids(tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(V1_EXAMPLES)
    (old_id, old_text), = con.execute("SELECT example_id, text FROM examples").fetchall()
    con.close()

    with open_db(db) as con:
        rows = con.execute("SELECT source, example_id, text, messages FROM examples").fetchall()
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        # The migrated store still de-duplicates against the old row.
        path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "What is 2 + 2?", "input": "", "output": "4"},
                                                  {"instruction": "What is 3 + 3?", "input": "", "output": "6"}])
        (report,) = ingest_paths(con, [path])
    assert rows == [("a", old_id, old_text,
                     '[{"role":"user","content":"What is 2 + 2?"},{"role":"assistant","content":"4"}]')]
    assert version == (str(SCHEMA_VERSION),)
    assert (report.kept, report.duplicates) == (1, 1)
