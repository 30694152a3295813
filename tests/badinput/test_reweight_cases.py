"""`curate reweight` with bad flags, folders and faults: one line, exit 2 (130 for Ctrl-C), nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from curate.cli import app
from tests.badinput.conftest import fails_cleanly, interruptible, runner, tree_digest

TINY = ["template=plain", "max_len=32", "tiny.hidden=32", "batch_size=8", "val_batch_size=8"]


def test_steps_zero_names_the_flag_not_the_config_class(tmp_path, arith_db):
    line = fails_cleanly(["reweight", "--steps", "0", "--db", arith_db, "--out", tmp_path / "r"], "--steps",
                         db=arith_db)
    assert "Config" not in line and not (tmp_path / "r").exists()


def test_a_bad_method_key_names_it_as_typed(tmp_path, arith_db):
    line = fails_cleanly(["reweight", "alpha=0", "--db", arith_db, "--out", tmp_path / "r"], "scalebio.alpha",
                         db=arith_db)
    assert "ScaleBiOConfig" not in line


def test_budget_zero_is_refused_before_any_work(tmp_path, arith_db):
    fails_cleanly(["reweight", "--method", "uniform", "--budget", "0", "--db", arith_db, "--out", tmp_path / "r"],
                  "--budget", db=arith_db)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("typed", ["1e-4", "1E-4", ".5", "5e3"])
def test_numbers_are_read_as_people_type_them(tmp_path, typed):
    res = runner.invoke(app, ["reweight", "--plan", "--db", str(tmp_path / "x.duckdb"), f"lr_model={typed}"])
    assert res.exit_code == 0, res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"lr_lambda: {typed}\nscalebio:\n  lr_model: {typed}\n")
    res = runner.invoke(app, ["reweight", "--plan", "--db", str(tmp_path / "x.duckdb"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output


def test_an_integer_key_refuses_a_fraction(tmp_path):
    fails_cleanly(["reweight", "--plan", "--db", tmp_path / "x.duckdb", "batch_size=2.5"], "batch_size")


def test_out_over_an_existing_run_is_refused_and_overwrite_replaces_it_whole(tmp_path, arith_db):
    run = tmp_path / "run"
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--budget", "20", "--db", str(arith_db), "--out",
                              str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    fails_cleanly(["reweight", "--method", "temperature", "--db", arith_db, "--out", run], ["already holds",
                  "--overwrite"], db=arith_db, folders=[run])
    res = runner.invoke(app, ["reweight", "--method", "temperature", "--db", str(arith_db), "--out", str(run),
                              "--overwrite", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "weights.json").read_text())["method"] == "temperature"
    assert not (run / "data").exists()  # the old draw does not outlive the weights it was drawn from


def test_out_into_a_folder_curate_did_not_write_is_refused(tmp_path, arith_db):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fails_cleanly(["reweight", "--method", "uniform", "--db", arith_db, "--out", mine],
                  ["files curate did not write", "--overwrite"], db=arith_db, folders=[mine])


def test_uniform_needs_no_target_split(tmp_path):
    from tests.conftest import alpaca_rows, write_jsonl

    for name in ("a", "b"):
        write_jsonl(tmp_path / f"{name}.jsonl", alpaca_rows(name, 5))
    db = tmp_path / "c.duckdb"
    assert runner.invoke(app, ["ingest", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--db", str(db),
                               "-q"]).exit_code == 0
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--db", str(db), "--out", str(tmp_path / "u"), "-q"])
    assert res.exit_code == 0, res.output
    fails_cleanly(["reweight", "--method", "rho", "--db", db, "--out", tmp_path / "r"], ["--target", "val"], db=db)


def test_a_model_folder_that_does_not_load_leaves_no_run_folder(tmp_path, arith_db):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    fails_cleanly(["reweight", "--model", bad, "--db", arith_db, "--out", tmp_path / "r", *TINY], "--model",
                  db=arith_db)
    assert not (tmp_path / "r").exists()


def test_resume_before_the_first_checkpoint_says_so(tmp_path, arith_db):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("method: scalebio\n")
    fails_cleanly(["reweight", "--resume", run, "--db", arith_db], ["before its first checkpoint", "--overwrite"],
                  db=arith_db, folders=[run])


def test_resume_of_a_method_without_checkpoints_is_refused(tmp_path, arith_db):
    run = tmp_path / "u"
    assert runner.invoke(app, ["reweight", "--method", "uniform", "--db", str(arith_db), "--out", str(run),
                               "-q"]).exit_code == 0
    fails_cleanly(["reweight", "--resume", run, "--db", arith_db], ["uniform", "not resumable"], db=arith_db,
                  folders=[run])


def test_a_missing_extra_is_named_with_its_brackets(tmp_path, arith_db, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    fails_cleanly(["reweight", "--launcher", "deepspeed", "--db", arith_db, "--out", tmp_path / "r"],
                  "pip install 'curate[deepspeed]'", db=arith_db)


def test_progress_on_a_non_terminal_is_plain_lines(tmp_path, arith_db):
    res = runner.invoke(app, ["reweight", "--steps", "20", "--db", str(arith_db), "--out", str(tmp_path / "r"),
                              *TINY])
    assert res.exit_code == 0, res.output
    assert "scalebio: step 20/20" in res.output and "step 2/20" in res.output
    assert "━" not in res.output.split("scalebio weights")[0]  # no bar before the summary table


def test_ctrl_c_during_scalebio_exits_130_with_the_command_that_continues(tmp_path, arith_db):
    run = tmp_path / "r"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-c", "from curate.cli import main; main()", "reweight", "--steps", "100000", "--db",
           str(arith_db), "--out", str(run), "--quiet", "checkpoint_every=5", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=interruptible)
    deadline = time.time() + 300
    while not list((run / "checkpoints").glob("*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    if not list((run / "checkpoints").glob("*")):
        proc.kill()
        pytest.fail(f"no checkpoint after 300 s: {proc.communicate()[1][-2000:]}")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + errs
    assert f"curate reweight --resume {run}" in errs and "resume=True" not in errs and "Traceback" not in errs
    res = runner.invoke(app, ["runs", "show", "r", "--db", str(arith_db), "--json"])
    assert json.loads(res.output)["status"] == "interrupted"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder modes")
def test_a_read_only_out_folder_is_exit_2_naming_it(tmp_path, arith_db):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        before = tree_digest(parent)
        res = runner.invoke(app, ["reweight", "--method", "uniform", "--db", str(arith_db), "--out",
                                  str(parent / "run")])
        assert res.exit_code == 2, res.output
        assert str(parent) in res.output and "Traceback" not in res.output
        assert tree_digest(parent) == before
    finally:
        parent.chmod(0o755)


def test_a_full_disk_while_writing_the_run_is_exit_2_and_the_run_is_marked_failed(tmp_path, arith_db, monkeypatch):
    import errno

    import curate.weights

    def full(path, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(curate.weights, "write_json", full)
    run = tmp_path / "r"
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--db", str(arith_db), "--out", str(run)])
    assert res.exit_code == 2, res.output
    assert "no space left" in res.output and "Traceback" not in res.output
    assert not (run / "weights.json").exists() and not list(run.glob(".*tmp"))
    res = runner.invoke(app, ["runs", "show", "r", "--db", str(arith_db), "--json"])
    assert json.loads(res.output)["status"] == "failed"


def test_resume_without_db_uses_the_store_the_run_was_made_from(tmp_path, arith_db, monkeypatch):
    run = tmp_path / "sb"
    res = runner.invoke(app, ["reweight", "--steps", "8", "--db", str(arith_db), "--out", str(run), "--quiet",
                              "checkpoint_every=4", *TINY])
    assert res.exit_code == 0, res.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CURATE_DB", raising=False)
    res = runner.invoke(app, ["reweight", "--resume", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    assert not (elsewhere / "curate.duckdb").exists()
