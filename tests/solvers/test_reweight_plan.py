"""``curate reweight --plan`` / ``--max-memory``: the memory plan is printed before any work, and a run that
cannot fit is refused with exit 2 and one line naming an option that would fit."""

from __future__ import annotations

from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def plan(tmp_path, *args):
    return runner.invoke(app, ["reweight", "--plan", "--db", str(tmp_path / "none.duckdb"), *args])


def test_plan_prints_every_variant_and_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = plan(tmp_path, "--max-memory", "64", "lisa=true")
    assert res.exit_code == 0, res.output
    for label in ("fine-tune", "ScaleBiO full", "ScaleBiO LISA(2)", "ScaleBiO LoRA(r=8)", "memory budget"):
        assert label in res.output
    assert "LISA(2)" in next(line for line in res.output.splitlines() if "this run" in line)
    assert list(tmp_path.iterdir()) == []  # no database, no run folder


def test_a_plan_that_cannot_fit_is_refused_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a wide tiny model with short rows: the weights decide; LoRA fits where two full copies do not
    res = plan(tmp_path, "--max-memory", "1.5", "tiny.hidden=1024", "tiny.layers=8", "max_len=16",
               "batch_size=5", "val_batch_size=4")
    assert res.exit_code == 2, res.output
    error = res.output.strip().splitlines()[-1]
    assert error.startswith("error: --plan: this run needs about") and "--lower-level lora" in error
    res = plan(tmp_path, "--max-memory", "1.5", "--lower-level", "lora", "tiny.hidden=1024", "tiny.layers=8",
               "max_len=16", "batch_size=5", "val_batch_size=4")
    assert res.exit_code == 0, res.output


def test_every_model_based_method_has_a_plan(tmp_path, monkeypatch):
    """LESS, RHO and DoReMi are planned like ScaleBiO: their line beside fine-tuning at the same batch; DoReMi
    holds three model copies and RHO two, so at a shared batch DoReMi plans more than RHO, RHO more than
    fine-tuning; a method without a model has nothing to plan."""
    monkeypatch.chdir(tmp_path)
    totals = {}
    for method, label, extra in (("rho", "RHO", ["reference_batch_size=8", "batch_size=8"]),
                                 ("doremi", "DoReMi", ["batch_size=8"]),
                                 ("less", "LESS", ["feature_buffer_mb=1", "proj_dim=64"])):
        res = plan(tmp_path, "--method", method, "--max-memory", "64", "max_len=64", *extra)
        assert res.exit_code == 0, res.output
        line = next(x for x in res.output.splitlines() if "this run" in x)
        assert line.lstrip().startswith(label) and "fine-tune (reference)" in res.output, res.output
        totals[method] = line
    assert "buffers" in totals["less"]  # the per-example gradient buffer and projection slice
    res = plan(tmp_path, "--method", "uniform")
    assert res.exit_code == 0 and "nothing to plan" in res.output, res.output
    assert list(tmp_path.iterdir()) == []


def test_a_baseline_that_cannot_fit_names_a_smaller_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = plan(tmp_path, "--method", "rho", "--max-memory", "0.5", "max_len=256", "reference_batch_size=64")
    assert res.exit_code == 2, res.output
    error = res.output.strip().splitlines()[-1]
    assert error.startswith("error: --plan: this run needs about") and "set reference_batch_size=" in error, error


def test_launcher_flags_are_checked_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, message in ((["--launcher", "mpi"], "--launcher"), (["--launcher", "deepspeed", "--zero", "1"], "--zero"),
                          (["--launcher", "deepspeed", "--method", "uniform"], "scalebio only"),
                          (["--launcher", "deepspeed", "--nproc", "0"], "--nproc")):
        res = runner.invoke(app, ["reweight", "--db", str(tmp_path / "none.duckdb"), *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_device_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = plan(tmp_path, "device=cuda")
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1].startswith("error: device=cuda: torch sees no GPU here")
    res = plan(tmp_path, "device=tpu")
    assert res.exit_code == 2 and "device" in res.output.strip().splitlines()[-1], res.output
    res = plan(tmp_path, "device=auto", "--max-memory", "64")  # auto falls back to the CPU
    assert res.exit_code == 0 and "memory budget: 64.00 GiB" in res.output, res.output
