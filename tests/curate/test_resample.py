"""Resample end to end on a stored corpus: proportions, provenance, manifest, determinism."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from curate.db import open_db
from curate.errors import DataError
from curate.ingest import ingest_paths
from curate.io import sha256_file
from curate.resample import resample


@pytest.fixture
def db(tmp_path, corpus):
    path = tmp_path / "c.duckdb"
    with open_db(path) as con:
        ingest_paths(con, [corpus])
    return path


def _weights(run, sources):
    run.mkdir(parents=True, exist_ok=True)
    (run / "weights.json").write_text(json.dumps({"method": "manual", "sources": sources}))
    return run


def test_resample_honours_weights_and_records_provenance(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=100, seed=3)
    table = pq.read_table(res.files[0])
    assert table.num_rows == 100
    counts = {s: table.column("source").to_pylist().count(s) for s in ("math", "chat", "code")}
    assert counts == {"math": 50, "chat": 30, "code": 20}
    code = [r for r in table.to_pylist() if r["source"] == "code"]
    assert sorted(r["draw"] for r in code) == [0] * 10 + [1] * 10  # 20 rows from 10: two whole passes
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["allocation"] == counts and manifest["seed"] == 3
    assert manifest["outputs"] == {"data/part-00000.parquet": sha256_file(res.files[0])}
    assert manifest["repeats"]["code"] == 2.0


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path, db):
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        run = _weights(tmp_path / f"r{i}", {"math": 0.6, "chat": 0.4, "code": 0.0})
        with open_db(db, read_only=True) as con:
            outs.append(pq.read_table(resample(con, run, budget=40, seed=seed).files[0]))
    assert outs[0].equals(outs[1])
    assert outs[0].column("example_id").to_pylist() != outs[2].column("example_id").to_pylist()


def test_weights_for_unknown_source_are_refused_and_nothing_written(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "nope": 0.5})
    with open_db(db, read_only=True) as con, pytest.raises(DataError, match="'nope' is not in the database"):
        resample(con, run, budget=10, seed=0)
    assert not (run / "data").exists()


def test_weights_not_summing_to_one_are_refused(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.2})
    with open_db(db, read_only=True) as con, pytest.raises(DataError, match="sum to 0.7"):
        resample(con, run, budget=10, seed=0)
