"""LESS and RHO keep their whole-pool pass chunk by chunk: a killed run resumes where it stopped, same scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.conftest import _arith, write_jsonl

runner = CliRunner()
CURATE = str(Path(sys.executable).with_name("curate"))
COMMON = ["template=plain", "max_len=32", "tiny.hidden=32", "stream_above=0"]
ARGS = {"rho": ["rho.reference_steps=10", "rho.reference_lr=0.003", "rho.checkpoint_rows=32", "rho.batch_size=16"],
        "less": ["less.lr=0.01", "less.warmup_epochs=1", "less.proj_dim=256", "less.warmup_min_rows=16",
                 "less.feature_buffer_mb=0.05", "less.grad_batch_size=4"]}


ROWS = {"rho": 800, "less": 250}
"""Rows per source: enough chunks that the kill lands mid-pass (LESS's per-example gradients cost more)."""


def _pool(tmp_path: Path, rows: int) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    for name, noise, seed in (("clean", 0.0, 1), ("noisy", 1.0, 2)):
        write_jsonl(d / f"{name}.jsonl", _arith(rows, noise, seed))
    write_jsonl(tmp_path / "val.jsonl", _arith(30, 0.0, 3))
    db = tmp_path / "c.duckdb"
    for args in ([str(d)], [str(tmp_path / "val.jsonl"), "--split", "val", "--source", "target"]):
        assert runner.invoke(app, ["ingest", *args, "--db", str(db), "--quiet"]).exit_code == 0
    return db


def _scores(run: Path) -> list[tuple[str, float]]:
    return [(r["example_id"], r["score"]) for r in pq.read_table(run / "scores.parquet").to_pylist()]


@pytest.mark.parametrize("method", ["rho", "less"])
def test_kill_9_mid_pass_then_resume_gives_the_uninterrupted_scores(tmp_path, method):
    pool_db = _pool(tmp_path, ROWS[method])
    whole = tmp_path / "whole"
    cmd = [CURATE, "reweight", "--method", method, "--db", str(pool_db), "--quiet", *COMMON, *ARGS[method]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([*cmd, "--out", str(whole)], check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, parts = time.monotonic() + 120, []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list((run / "checkpoints").glob(f"{method}-*.parquet"))
        if len(parts) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-pass"
    assert not (run / "weights.json").exists()
    stored = sorted((run / "checkpoints").glob(f"{method}-*.parquet"))
    before = {p.name: p.stat().st_mtime_ns for p in stored}
    res = subprocess.run([CURATE, "reweight", "--resume", str(run), "--quiet"], env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    got, want = _scores(run), _scores(whole)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    assert json.loads((run / "weights.json").read_text())["sources"] == pytest.approx(
        json.loads((whole / "weights.json").read_text())["sources"])
    assert before  # chunks were stored before the kill, and the finished run removed them
    assert not (run / "checkpoints").exists()


def test_stored_chunks_are_read_not_recomputed(tmp_path, monkeypatch):
    import baselines.rho as rho
    from baselines import RhoConfig, run
    from solvers.data import tokenize_rows
    from solvers.lm import tiny_llama, train_tokenizer

    rows = _arith(80, 0.5, 7)
    prompts, responses = [r["instruction"] for r in rows], [r["output"] for r in rows]
    tok = train_tokenizer(prompts + responses, 200)
    data = tokenize_rows(tok, prompts, responses, [i % 2 for i in range(80)], ["a", "b"], 24, "plain")
    target = tokenize_rows(tok, prompts[:10], responses[:10], [0] * 10, ["a", "b"], 24, "plain")
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2, max_len=32, seed=0)
    cfg = RhoConfig(reference_steps=3, checkpoint_rows=16, batch_size=8)
    counts = {"a": 40, "b": 40}
    first = run("rho", cfg, counts=counts, model=model, train=data, target=target, checkpoint_dir=tmp_path)
    assert len(list(tmp_path.glob("rho-excess-*.parquet"))) == 5 and (tmp_path / rho.REFERENCE_FILE).exists()
    (tmp_path / "rho-excess-000000000032.parquet").unlink()
    calls = []
    real = rho.example_losses
    monkeypatch.setattr(rho, "example_losses", lambda m, d, *a: calls.append(len(d)) or real(m, d, *a))
    again = run("rho", cfg, counts=counts, model=model, train=data, target=target, checkpoint_dir=tmp_path)
    assert calls == [16, 16]  # only the missing chunk, under the model and the stored reference
    assert [s for _, _, s in again.scores] == pytest.approx([s for _, _, s in first.scores], abs=0)
