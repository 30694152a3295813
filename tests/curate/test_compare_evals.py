"""compare's plug-in evaluations and progress: a real stub judge on 127.0.0.1 that works, times out or refuses
the key; every failure is recorded beside the finished cells, never a crash that loses them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.judge_stub import running_stub
from tests.lmeval_task import write_mc_task

runner = CliRunner()
SMALL = ["--methods", "uniform,temperature", "--seeds", "1", "--budget", "40", "recipe.steps=5",
         "recipe.eval_limit=4", "template=plain", "max_len=32", "tiny.hidden=32"]
SECRET = "sk-compare-SECRET-42"


@pytest.fixture(autouse=True)
def _direct(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CURATE_JUDGE_API_KEY", SECRET)


@pytest.fixture
def stub():
    with running_stub() as server:
        yield server


def _compare(db, out, *extra):
    return runner.invoke(app, ["compare", "--db", str(db), "--out", str(out), *SMALL, *extra])


def test_judge_scores_join_the_report_and_can_be_the_main_metric(tmp_path, arith_db, stub):
    out = tmp_path / "cmp"
    res = _compare(arith_db, out, "--judge", stub.url("ok"), "main_metric=judge", "judge.timeout_s=5")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main_metric"] == "judge" and summary["directions"]["judge"] == "max"
    for arm in ("uniform", "temperature"):
        assert 1 <= summary["methods"][arm]["metrics"]["judge"]["mean"] <= 10
    cell = json.loads((out / "cells" / "uniform-seed0.json").read_text())
    assert len(cell["per_example"]["judge"]) == 4  # one grade per judged test prompt, paired across arms
    assert summary["verdict"]["metric"] == "judge" and "On judge (higher is better)" in summary["headline"]
    assert all(r["auth"] == f"Bearer {SECRET}" for r in stub.requests) and len(stub.requests) == 8
    assert SECRET not in res.output and SECRET not in (out / "summary.json").read_text()


def test_a_password_in_the_judge_url_stays_out_of_the_kept_files(tmp_path, arith_db, stub):
    out = tmp_path / "cmp"
    url = stub.url("ok").replace("http://", "http://alice:hunter2@")
    res = _compare(arith_db, out, "--judge", url, "judge.timeout_s=5")
    assert res.exit_code == 0, res.output
    kept = "".join(p.read_text() for p in out.rglob("*.json")) + res.output
    assert "hunter2" not in kept and "judge" in json.loads((out / "summary.json").read_text())["metrics"]


@pytest.mark.parametrize("mode", ["slow", "unauth"])
def test_a_broken_judge_is_a_recorded_failure_and_the_cells_survive(tmp_path, arith_db, stub, mode):
    out = tmp_path / "cmp"
    res = _compare(arith_db, out, "--judge", stub.url(mode), "judge.timeout_s=0.3", "judge.retries=0")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"uniform", "temperature"}
    assert "judge" not in summary["metrics"] and summary["main_metric"] == "target_loss"
    failed = summary["meta"]["failed_evals"]
    assert set(failed) == {"uniform", "temperature"} and all("judge" in r[0] for r in failed.values())
    assert "Some evaluations failed" in summary["headline"]
    assert SECRET not in res.output and SECRET not in json.dumps(summary)
    # the next run retries the judge (a cell whose evaluation failed is not reused); now it works
    res = _compare(arith_db, out, "--judge", stub.url("ok"), "judge.timeout_s=5", "judge.retries=0")
    assert res.exit_code == 0, res.output
    assert "judge" in json.loads((out / "summary.json").read_text())["metrics"]


def test_plugin_settings_are_checked_before_any_work(tmp_path, arith_db):
    out = tmp_path / "cmp"
    for extra, words in ((["main_metric=judge"], ["main_metric=judge", "--judge"]),
                         (["--eval", "lmeval:x"], ["--eval", "lm-eval:TASK"]),
                         (["judge.model=x"], ["judge.", "--judge"]),
                         (["--judge", "ftp://x"], ["judge", "url"]),
                         (["--eval-include", str(tmp_path / "none")], ["--eval-include", "no such folder"])):
        res = _compare(arith_db, out, *extra)
        assert res.exit_code == 2, (extra, res.output)
        assert len(res.output.strip().splitlines()) == 1 and all(w in res.output for w in words), res.output
        assert not out.exists()


def test_lm_eval_tasks_without_the_extra_are_refused_before_any_work(tmp_path, arith_db, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    out = tmp_path / "cmp"
    res = _compare(arith_db, out, "--eval", "lm-eval:sums")
    assert res.exit_code == 2 and "pip install 'curate[lmeval]'" in res.output, res.output
    assert not out.exists()


def test_progress_names_every_cell_and_its_stages(tmp_path, arith_db):
    res = _compare(arith_db, tmp_path / "cmp")  # not a terminal: one line per stage and per finished cell
    assert res.exit_code == 0, res.output
    for line in ("seed 0 uniform: method", "seed 0 uniform: fine-tune (5 steps)", "seed 0 temperature: evaluate",
                 "compare 1/2: seed 0 uniform done in", "compare 2/2: seed 0 temperature done in"):
        assert line in res.output, res.output
    again = _compare(arith_db, tmp_path / "cmp")
    assert "compare 2/2: seed 0 temperature reused" in again.output


def _arith_task(folder):
    """The right sum against two wrong ones, as a local lm-eval task."""
    rows = [{"question": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1), str(a * b + 7)], "label": 0}
            for a, b in ((i % 9 + 1, i // 9 + 2) for i in range(24))]
    write_mc_task(folder, "sums", rows)
    return len(rows)


@pytest.mark.slow
def test_lm_eval_tasks_join_the_report_offline(tmp_path, arith_db, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    n = _arith_task(tasks)
    out = tmp_path / "cmp"
    res = _compare(arith_db, out, "--eval", "lm-eval:sums", "--eval-include", str(tasks), "main_metric=sums/acc")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main_metric"] == "sums/acc" and summary["directions"]["sums/acc"] == "max"
    for arm in ("uniform", "temperature"):
        assert 0 <= summary["methods"][arm]["metrics"]["sums/acc"]["mean"] <= 1
    cell = json.loads((out / "cells" / "uniform-seed0.json").read_text())
    assert len(cell["per_example"]["sums/acc"]) == n
    assert summary["methods"]["uniform"]["vs_headline"]["sums/acc"]["n_examples"] == n
    assert len(list(out.rglob("model/config.json"))) == 2  # each arm's model, saved for lm-eval


def test_more_seeds_or_methods_reuse_the_finished_cells(tmp_path, arith_db):
    out = tmp_path / "cmp"
    assert _compare(arith_db, out).exit_code == 0
    before = (out / "cells" / "uniform-seed0.json").read_text()
    two_seeds = ["compare", "--db", str(arith_db), "--out", str(out), "--methods", "uniform,temperature",
                 "--seeds", "2", *SMALL[4:], "main_metric=accuracy"]
    res = runner.invoke(app, two_seeds)
    assert res.exit_code == 0, res.output
    assert "compare 1/4: seed 0 uniform reused" in res.output and "seed 1 uniform done" in res.output
    assert (out / "cells" / "uniform-seed0.json").read_text() == before
    # a setting that changes a cell's numbers retrains it
    res = _compare(arith_db, out, "recipe.lr=1e-3")
    assert res.exit_code == 0 and "compare 1/2: seed 0 uniform done" in res.output, res.output


def test_on_a_terminal_the_bar_counts_cells_and_shows_the_stage(monkeypatch):
    import io

    from rich.console import Console

    from curate.cli import progress

    screen = io.StringIO()
    monkeypatch.setattr(progress, "err", Console(file=screen, force_terminal=True, width=120))
    with progress.compare_progress(quiet=False, json_logs=False) as on_event:
        on_event({"event": "start", "total": 2, "arms": ["uniform", "scalebio"], "seeds": [0]})
        on_event({"event": "cell", "arm": "uniform", "seed": 0, "cached": False})
        on_event({"event": "phase", "phase": "fine-tune", "total": 3})
        for step in range(3):
            on_event({"event": "step", "stage": "sft", "step": step, "loss": 1.5})
        on_event({"event": "done", "arm": "uniform", "seed": 0, "status": "ok", "wall_s": 12.3})
        on_event({"event": "cell", "arm": "scalebio", "seed": 0, "cached": True})
        on_event({"event": "done", "arm": "scalebio", "seed": 0, "status": "cached", "wall_s": 40.0})
    text = screen.getvalue()
    assert "compare 1/2: seed 0 uniform done in 12 s" in text and "compare 2/2: seed 0 scalebio reused" in text
    # the last frame (Rich redraws on a timer, so the instant steps above leave no frame of their own)
    assert "2/2" in text and "0:00:00" in text and "seed 0 · scalebio" in text
