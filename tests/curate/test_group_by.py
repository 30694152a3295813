"""`curate reweight --group-by`: weights over clusters inside sources separate what per-source weights cannot.

The planted pool: source ``mixed`` is half target-task rows (word problems) and half rows of another kind
(French sentences); ``code`` is off-target. Per source, ScaleBiO can only take ``mixed`` whole, so a budget's rows
from it are about half clean; weighing ``curate cluster``'s groups, the draw from ``mixed`` is mostly clean.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.db import open_db
from curate.ingest import ingest_paths
from tests.conftest import write_jsonl
from tests.curate.test_cluster import _french, _word_problem

runner = CliRunner()
SCALEBIO = ["--steps", "150", "template=plain", "tiny.hidden=32"]
"""Measured on seeds 0-2: the clean share of the grouped draw from ``mixed`` was 0.92-0.93 (group weight on the
word problems 0.86-0.87); per source it was 0.47-0.52."""
BUDGET = 120


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    rng = random.Random(0)
    mixed = [_word_problem(rng) for _ in range(60)] + [_french(rng, i) for i in range(60)]
    code = [{"prompt": f"Write a function f{i}.", "response": f"def f{i}():\n    return {i}"} for i in range(60)]
    files = [write_jsonl(tmp_path / "mixed.jsonl", mixed), write_jsonl(tmp_path / "code.jsonl", code)]
    val = write_jsonl(tmp_path / "val.jsonl", [_word_problem(rng) for _ in range(40)])
    db = tmp_path / "c.duckdb"
    with open_db(db) as con:
        ingest_paths(con, files)
        ingest_paths(con, [val], source="target", split="val")
    res = runner.invoke(app, ["cluster", "--k", "2", "--sources", "mixed", "--name", "k2", "--db", str(db)])
    assert res.exit_code == 0, res.output
    return db


def _clean_share(run: Path) -> float:
    rows = [r for r in pq.read_table(run / "data").to_pylist() if r["source"] == "mixed"]
    assert rows
    return sum("How many" in r["prompt"] for r in rows) / len(rows)


def _reweight(db: Path, out: Path, seed: int, *extra: str) -> dict:
    res = runner.invoke(app, ["reweight", "--db", str(db), "--out", str(out), "--seed", str(seed), "--budget",
                              str(BUDGET), *SCALEBIO, *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "weights.json").read_text())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_weights_draw_the_clean_half_of_a_mixed_source(planted, tmp_path, seed):
    whole = _reweight(planted, tmp_path / "sources", seed)
    grouped = _reweight(planted, tmp_path / "groups", seed, "--group-by", "k2")
    assert "groups" not in whole and set(grouped["groups"]) == {"code", "mixed/c00", "mixed/c01"}
    assert grouped["sources"] == pytest.approx(
        {"code": grouped["groups"]["code"], "mixed": grouped["groups"]["mixed/c00"] + grouped["groups"]["mixed/c01"]})
    assert grouped["counts"] == {"code": 60, "mixed": 120}
    per_source, per_group = _clean_share(tmp_path / "sources"), _clean_share(tmp_path / "groups")
    assert 0.4 <= per_source <= 0.6  # a whole source is drawn as it is
    assert per_group >= 0.8
    part = pq.read_table(tmp_path / "groups" / "data")
    assert "group" in part.column_names


DOREMI = ["template=plain", "tiny.hidden=32", "doremi.reference_steps=10", "doremi.proxy_steps=10",
          "doremi.batch_size=8"]


@pytest.mark.parametrize("method", ["uniform", "proportional", "temperature", "doremi"])
def test_baselines_weigh_groups_and_the_draw_exports(planted, tmp_path, method):
    run = tmp_path / method
    res = runner.invoke(app, ["reweight", "--method", method, "--group-by", "k2", "--db", str(planted), "--out",
                              str(run), "--budget", "60", *(DOREMI if method == "doremi" else [])])
    assert res.exit_code == 0, res.output
    assert "groups of 'k2'" in res.output
    assert "allocation over k2" in res.output  # the allocation table is over groups, and says so
    doc = json.loads((run / "weights.json").read_text())
    assert doc["group_counts"] == {"code": 60, "mixed/c00": pytest.approx(doc["group_counts"]["mixed/c00"]),
                                   "mixed/c01": 120 - doc["group_counts"]["mixed/c00"]}
    if method == "uniform":  # uniform over the three groups, so mixed gets two thirds
        assert doc["sources"]["mixed"] == pytest.approx(2 / 3)
    if method == "proportional":  # by rows: mixed holds 120 of 180
        assert doc["sources"]["mixed"] == pytest.approx(2 / 3)
        assert doc["groups"]["code"] == pytest.approx(1 / 3)
    data = pq.read_table(run / "data").to_pylist()
    assert len(data) == 60 and {r["group"] for r in data} <= set(doc["groups"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert sum(manifest["allocation"].values()) == 60 and set(manifest["allocation"]) <= set(doc["groups"])
    res = runner.invoke(app, ["export", str(run), "--format", "parquet", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    import datasets

    ds = datasets.load_dataset(str(tmp_path / "exp"), split="train")
    assert ds.num_rows == 60 and "group" in ds.column_names


def test_bad_or_stale_grouping_is_refused_before_any_work(planted, tmp_path):
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--group-by", "nope", "--db", str(planted),
                              "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "curate cluster" in res.output and not (tmp_path / "a").exists()
    run = tmp_path / "ok"
    assert runner.invoke(app, ["reweight", "--method", "uniform", "--group-by", "k2", "--db", str(planted),
                               "--out", str(run)]).exit_code == 0
    more = write_jsonl(tmp_path / "more.jsonl", [{"prompt": f"new {i}", "response": "x"} for i in range(5)])
    with open_db(planted) as con:
        ingest_paths(con, [more], source="mixed")
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--group-by", "k2", "--db", str(planted),
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "changed since" in res.output and not (tmp_path / "b").exists()
    res = runner.invoke(app, ["resample", str(run), "--budget", "20", "--db", str(planted)])
    assert res.exit_code == 2 and "re-run `curate cluster" in res.output
