"""The front door end to end through the CLI: ingest -> reweight -> resample -> export -> compare."""

from __future__ import annotations

import json

import datasets
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def test_uniform_reweight_resample_export_roundtrip(tmp_path, arith_db):
    run = tmp_path / "run"
    res = runner.invoke(app, ["reweight", "--method", "temperature", "--budget", "50", "--db", str(arith_db),
                              "--out", str(run), "temperature=1.0"])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "weights.json").read_text())
    assert doc["method"] == "temperature" and set(doc["sources"]) == {"clean", "noisy"}
    res = runner.invoke(app, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "exp"), "--messages"])
    assert res.exit_code == 0, res.output
    ds = datasets.load_from_disk(str(tmp_path / "exp"))["train"]
    assert ds.num_rows == 50 and ds[0]["messages"][-1]["role"] == "assistant"


def test_scalebio_reweight_end_to_end(tmp_path, arith_db):
    run = tmp_path / "sb"
    res = runner.invoke(app, ["reweight", "--method", "scalebio", "--steps", "40", "--db", str(arith_db),
                              "--out", str(run), "--quiet", "template=plain", "batch_size=16", "val_batch_size=16",
                              "tiny.hidden=32", "max_len=32", "save_model=true"])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "weights.json").read_text())
    assert abs(sum(doc["sources"].values()) - 1) < 1e-6 and doc["averaged"]
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run / "base_model")
    final = AutoModelForCausalLM.from_pretrained(run / "model")
    assert any((a - b).abs().max() > 0 for a, b in zip(base.parameters(), final.parameters(), strict=True))
    assert (run / "trajectory.parquet").exists() and (run / "config.yaml").exists()


def test_bad_override_is_one_line_exit_2(arith_db, tmp_path):
    res = runner.invoke(app, ["reweight", "--method", "scalebio", "--db", str(arith_db), "--out", str(tmp_path / "x"),
                              "alphaa=3"])
    assert res.exit_code == 2 and "unknown key 'alphaa'" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_compare_two_methods_one_seed(tmp_path, arith_db):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "uniform,scalebio", "--seeds", "1", "--budget", "40", "--db", str(arith_db),
            "--out", str(out), "--quiet", "recipe.steps=10", "recipe.eval_limit=5", "template=plain", "max_len=32",
            "tiny.hidden=32", "scalebio.steps=10", "scalebio.batch_size=8", "scalebio.val_batch_size=8"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"uniform", "scalebio"}
    assert {"report.md", "report.html"} <= {p.name for p in out.iterdir()}
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["scalebio-seed0.json", "uniform-seed0.json"]
    # resumable: a second invocation reuses finished cells (same numbers, no new training)
    before = (out / "cells" / "uniform-seed0.json").read_text()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "cells" / "uniform-seed0.json").read_text() == before


def test_resume_continues_from_the_run_folder(tmp_path, arith_db):
    run = tmp_path / "sb"
    args = ["--db", str(arith_db), "--quiet"]
    res = runner.invoke(app, ["reweight", "--method", "scalebio", "--steps", "12", "--out", str(run), *args,
                              "template=plain", "max_len=32", "tiny.hidden=32", "scalebio.batch_size=8",
                              "scalebio.val_batch_size=8", "scalebio.checkpoint_every=4"])
    assert res.exit_code == 0, res.output
    first = json.loads((run / "weights.json").read_text())
    # Resuming under different settings is refused and changes nothing.
    res = runner.invoke(app, ["reweight", "--resume", str(run), *args, "scalebio.alpha=20"])
    assert res.exit_code == 2 and "alpha" in res.output, res.output
    assert json.loads((run / "weights.json").read_text())["sources"] == first["sources"]
    res = runner.invoke(app, ["reweight", "--resume", str(run), *args])
    assert res.exit_code == 0, res.output
    again = json.loads((run / "weights.json").read_text())
    assert again["sources"] == first["sources"] and again["method"] == "scalebio"
