"""Every model-based method's run folder goes through the one resampler and the export unchanged."""

from __future__ import annotations

import json

import datasets
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.sampling import allocate

runner = CliRunner()
TINY = ["template=plain", "max_len=32", "tiny.hidden=32"]
ARGS = {
    "less": ["less.lr=0.01", "less.warmup_epochs=1", "less.proj_dim=256", "less.select_fraction=0.3",
             "less.warmup_min_rows=16"],
    "rho": ["rho.reference_steps=10", "rho.reference_lr=0.003", "rho.select_fraction=0.3"],
    "doremi": ["doremi.reference_steps=10", "doremi.proxy_steps=10", "doremi.batch_size=8",
               "doremi.reference_data=target"],
}


@pytest.mark.parametrize("method", sorted(ARGS))
def test_method_run_resamples_and_exports(tmp_path, arith_db, method):
    run = tmp_path / method
    res = runner.invoke(app, ["reweight", "--method", method, "--budget", "30", "--db", str(arith_db), "--out",
                              str(run), "--quiet", *TINY, *ARGS[method]])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "weights.json").read_text())
    assert doc["method"] == method and abs(sum(doc["sources"].values()) - 1) < 1e-6
    data = pq.read_table(run / "data" / "part-00000.parquet").to_pylist()
    assert len(data) == 30
    got = {s: sum(r["source"] == s for r in data) for s in doc["sources"]}
    assert got == allocate(doc["sources"], 30, doc["counts"])
    if method in ("less", "rho"):
        scores = pq.read_table(run / "scores.parquet")
        assert scores.num_rows == sum(doc["counts"].values())
        rows = scores.to_pylist()
        for source, k in got.items():  # within a source, the resampler takes the best-scored rows first
            pool = sorted((r for r in rows if r["source"] == source), key=lambda r: -r["score"])
            if 0 < k < len(pool):
                picked = {r["example_id"] for r in data if r["source"] == source}
                cutoff = pool[k - 1]["score"]
                assert all(r["score"] >= cutoff for r in pool if r["example_id"] in picked)
    res = runner.invoke(app, ["export", str(run), "--format", "parquet", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    ds = datasets.load_dataset(str(tmp_path / "exp"), split="train")
    assert ds.num_rows == 30 and sorted(ds["example_id"]) == sorted(r["example_id"] for r in data)
