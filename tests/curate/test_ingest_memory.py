"""Ingest under a small DuckDB memory cap: the cap is applied, and a file bigger than it still ingests (spills)."""

from __future__ import annotations

import duckdb
import pytest

from curate.db import MEMORY_ENV, memory_limit, open_db, spill_dir
from curate.errors import ConfigError, DataError
from curate.ingest import ingest_paths

ROWS = 100_000


def _write_pool(path) -> None:
    """~50 MB of Alpaca rows (1 in 50 an exact duplicate), written by DuckDB so the test stays fast."""
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT 'Explain item ' || (i % {ROWS - ROWS // 50}) || ' in plain words' AS instruction, '' AS input,
                   repeat('The answer is long enough to matter. ', 12) || (i % {ROWS - ROWS // 50}) AS output
                 FROM range({ROWS}) t(i)) TO '{path}' (FORMAT json)""")
    con.close()


def test_ingest_bigger_than_memory_limit_spills_and_keeps_every_row(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "32MB")
    src = tmp_path / "pool.jsonl"
    _write_pool(src)
    assert src.stat().st_size > 32 * 1000**2  # the data cannot fit in the cap
    db = tmp_path / "c.duckdb"
    with open_db(db) as con:
        limit = con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
        (report,) = ingest_paths(con, [src])
    assert limit is not None and limit[0].endswith("MiB") and float(limit[0].split()[0]) < 32
    assert limit[1] == str(spill_dir(db))
    assert (report.rows_read, report.kept, report.duplicates, report.rejected) == (ROWS, ROWS - ROWS // 50,
                                                                                    ROWS // 50, 0)
    with open_db(db, read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT content_hash) FROM example_rows").fetchone() == (ROWS - ROWS // 50,)


def test_default_memory_limit_is_capped_at_2gb(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert 0 < int(memory_limit().removesuffix("MB")) <= 2000


@pytest.mark.parametrize("value", ["lots", "-1GB", "0"])
def test_bad_memory_env_is_one_line_naming_the_variable(tmp_path, monkeypatch, value):
    monkeypatch.setenv(MEMORY_ENV, value)
    with pytest.raises(ConfigError, match=rf"^{MEMORY_ENV}=.*set it like 512MB"):
        with open_db(tmp_path / "c.duckdb"):
            pass
    assert not (tmp_path / "c.duckdb").exists()


def test_line_longer_than_the_buffer_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "16MB")  # lines may take 2 MiB
    src = tmp_path / "long.jsonl"
    src.write_text('{"text": "short"}\n' + '{"text": "' + "x" * 3_000_000 + '"}\n')
    with open_db(tmp_path / "c.duckdb") as con, pytest.raises(DataError, match=rf"longer than .* raise {MEMORY_ENV}"):
        ingest_paths(con, [src])
