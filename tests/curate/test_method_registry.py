"""The method registry is the one place a method is declared: a toy method registered here (one config class,
one ``fit``, one ``register`` line) runs through reweight, resample, export, compare and the run record, with
nothing else changed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import datasets
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate import methods
from curate.cli import app
from curate.methods import FitInputs, FitResult, Method, TrajectoryRow

runner = CliRunner()


@dataclass(frozen=True)
class FavouriteConfig:
    favourite: str = "clean"
    share: float = 0.9
    rounds: int = 3


def fit_favourite(inputs: FitInputs) -> FitResult:
    """Put ``share`` on one source and the rest evenly on the others, walking there over ``rounds`` steps."""
    cfg, names = inputs.cfg, sorted(inputs.counts)
    rest = (1 - cfg.share) / max(1, len(names) - 1)
    final = {s: cfg.share if s == cfg.favourite else rest for s in names}
    steps = [TrajectoryRow(t, {s: (w * (t + 1) + (cfg.rounds - t - 1) / len(names)) / cfg.rounds
                               for s, w in final.items()}, {"loss": 1.0 / (t + 1)}) for t in range(cfg.rounds)]
    scores = [(i, s, float(len(p))) for i, s, p in zip(inputs.pool.example_ids, inputs.pool.sources,
                                                         inputs.pool.prompts, strict=True)]
    return FitResult(weights=final, scores=scores, trajectory=steps, diagnostics={"favourite": cfg.favourite})


@pytest.fixture
def favourite(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "favourite", Method(
        "favourite", FavouriteConfig, fit_favourite, "a toy: one source gets most weight", step_key="rounds",
        level="example"))
    return "favourite"


def test_a_registered_method_runs_through_every_command(tmp_path, arith_db, favourite):
    run = tmp_path / "fav"
    res = runner.invoke(app, ["reweight", "--method", favourite, "--steps", "4", "--budget", "40", "--db",
                              str(arith_db), "--out", str(run), "favourite.share=0.75"])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "weights.json").read_text())
    assert doc["method"] == favourite and doc["sources"] == pytest.approx({"clean": 0.75, "noisy": 0.25})
    trajectory = pq.read_table(run / "trajectory.parquet").to_pylist()
    assert [r["step"] for r in trajectory] == [0, 1, 2, 3] and trajectory[-1]["p_clean"] == pytest.approx(0.75)
    assert pq.read_table(run / "scores.parquet").num_rows == sum(doc["counts"].values())

    res = runner.invoke(app, ["resample", str(run), "--budget", "20", "--seed", "1", "--db", str(arith_db)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(run), "--format", "parquet", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    ds = datasets.load_dataset(str(tmp_path / "exp"), split="train")
    assert ds.num_rows == 20 and sorted(set(ds["source"])) == ["clean", "noisy"]

    res = runner.invoke(app, ["runs", "--db", str(arith_db)])
    assert res.exit_code == 0 and "fav" in res.output and favourite in res.output, res.output
    res = runner.invoke(app, ["runs", "show", "fav", "--db", str(arith_db), "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.output)
    assert record["status"] == "finished" and record["trajectory_steps"] == 4
    assert record["weights"] == pytest.approx({"clean": 0.75, "noisy": 0.25})


def test_a_registered_method_is_compared_like_the_others(tmp_path, arith_db, favourite):
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", "--methods", f"uniform,{favourite}", "--seeds", "1", "--budget", "40",
                              "--db", str(arith_db), "--out", str(out), "--quiet", "recipe.steps=5",
                              "recipe.eval_limit=5", "template=plain", "max_len=32", "tiny.hidden=32"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"uniform", favourite}


def test_an_unknown_method_names_every_registered_one(arith_db, tmp_path, favourite):
    res = runner.invoke(app, ["reweight", "--method", "nope", "--db", str(arith_db), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and favourite in res.output and "scalebio" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_runs_lists_newest_first_and_show_refuses_an_unknown_id(tmp_path, arith_db):
    for name, method in (("a-run", "uniform"), ("b-run", "temperature")):
        res = runner.invoke(app, ["reweight", "--method", method, "--db", str(arith_db), "--out",
                                  str(tmp_path / name), "--quiet"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["runs", "--db", str(arith_db), "--method", "temperature"])
    assert res.exit_code == 0 and "b-run" in res.output and "a-run" not in res.output, res.output
    res = runner.invoke(app, ["runs", "show", "zzz", "--db", str(arith_db)])
    assert res.exit_code == 2 and "no run match 'zzz'" in res.output
