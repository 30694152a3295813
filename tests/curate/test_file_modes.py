"""What curate writes is readable by others the way an ordinary write is: modes follow the umask (0644/0755 under
022), not tempfile's private 0600/0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def tree_modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): mode(p) for p in [root, *root.rglob("*")]}


def reweight(tmp_path: Path, db: Path, name: str) -> Path:
    run = tmp_path / name
    res = runner.invoke(app, ["reweight", "--method", "uniform", "--budget", "40", "--db", str(db), "--out", str(run),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    return run


def export(run: Path, fmt: str, out: Path) -> Path:
    res = runner.invoke(app, ["export", str(run), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_run_and_export_files_get_umask_022_modes(tmp_path, arith_db, umask):
    umask(0o022)
    run = reweight(tmp_path, arith_db, "run")
    parts = sorted((run / "data").glob("*.parquet"))
    assert parts
    assert {p.name: mode(p) for p in [run / "weights.json", run / "manifest.json", run / "config.yaml", *parts]} == {
        p.name: 0o644 for p in [run / "weights.json", run / "manifest.json", run / "config.yaml", *parts]}
    assert mode(run) == 0o755 and mode(run / "data") == 0o755
    for fmt in ("hf", "parquet"):
        out = export(run, fmt, tmp_path / f"exp-{fmt}")
        modes = tree_modes(out)
        assert any(k.endswith((".arrow", ".parquet")) for k in modes), modes
        assert modes == {k: 0o755 if (out / k).is_dir() else 0o644 for k in modes}, fmt
    # Re-exporting over an earlier export (a folder swap) keeps the modes.
    out = export(run, "parquet", tmp_path / "exp-hf")
    assert mode(out) == 0o755 and {mode(p) for p in out.rglob("*") if p.is_file()} == {0o644}


def test_modes_follow_the_umask_not_a_fixed_0644(tmp_path, arith_db, umask):
    umask(0o027)
    run = reweight(tmp_path, arith_db, "run")
    for p in [run / "weights.json", run / "manifest.json", *(run / "data").glob("*.parquet")]:
        assert mode(p) == 0o640, p
    assert mode(run / "data") == 0o750
    out = export(run, "parquet", tmp_path / "exp")
    modes = tree_modes(out)
    assert modes == {k: 0o750 if (out / k).is_dir() else 0o640 for k in modes}


def test_saved_model_folder_is_not_private(tmp_path, umask):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from curate.modeling import save_base
    from solvers.lm import tiny_llama, train_tokenizer

    umask(0o022)
    tok = train_tokenizer(["What is 1 + 2? 3", "What is 4 + 5? 9"] * 10, vocab_size=100)
    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2, max_len=16, seed=0)
    dest = save_base(tmp_path, model, tok)
    modes = tree_modes(dest)
    assert "model.safetensors" in modes  # safetensors on its own writes this one 0600
    assert modes == {k: 0o755 if (dest / k).is_dir() else 0o644 for k in modes}
    assert [p.name for p in tmp_path.iterdir()] == ["base_model"]
