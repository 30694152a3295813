"""Bad input to `curate export`: a run without data, tampered or stale data, bad flags, foreign folders,
filesystem faults and a kill. Each case runs the real CLI and checks the exit code, the one-line message, and that
the run folder and any earlier export are unchanged."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from tests.badinput.conftest import fails_cleanly, tree_digest

runner = CliRunner()
WEIGHTS = {"method": "manual", "sources": {"clean": 0.75, "noisy": 0.25}}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def ok(*args: object) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def run(tmp_path: Path, arith_db: Path) -> Path:
    """A run folder with weights and a draw of 40 rows (seed 1) from ``arith_db``."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "weights.json").write_text(json.dumps(WEIGHTS))
    ok("resample", folder, "--budget", 40, "--seed", 1, "--db", arith_db, "-q")
    return folder


@pytest.fixture
def exported(run: Path, tmp_path: Path) -> Path:
    """A first, good export of ``run`` (Parquet)."""
    out = tmp_path / "exports" / "mix"
    ok("export", run, "--out", out, "-q")
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def card_weights(out: Path) -> dict[str, float]:
    body = (out / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2]
    found = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1].replace(".", "", 1).isdigit():
            found[cells[0]] = float(cells[1])
    return found


# --- already handled: pinned here through the CLI ---------------------------------------------------------------


def test_run_without_data(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "weights.json").write_text(json.dumps(WEIGHTS))
    fails_cleanly(["export", folder, "--out", tmp_path / "out"], ["no resampled data", "curate resample"],
                  folders=[folder])
    assert not (tmp_path / "out").exists()


def test_tampered_data_part(run, exported):
    part = run / "data" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).slice(0, 10), part)
    fails_cleanly(["export", run, "--out", exported], ["part-00000.parquet", "sha256", "again"],
                  folders=[run, exported])


def test_unknown_format(run, tmp_path):
    fails_cleanly(["export", run, "--format", "bogus", "--out", tmp_path / "out"], ["--format 'bogus'", "parquet"],
                  folders=[run])
    assert not (tmp_path / "out").exists()


def test_non_empty_foreign_folder_needs_force(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fails_cleanly(["export", run, "--out", mine], ["not written by curate export", "--force"], folders=[run, mine])


@pytest.mark.parametrize("repo", ["a/b/c", "foo--bar", "user/name.git"])
def test_invalid_repo_id_fails_before_any_export(run, tmp_path, repo):
    out = tmp_path / "out"
    fails_cleanly(["export", run, "--out", out, "--push-to-hub", repo], ["--push-to-hub", "not a valid repo id"],
                  folders=[run])
    assert not out.exists()


# --- weights changed after the draw ------------------------------------------------------------------------------


def test_weights_rewritten_after_the_draw_are_refused(run, exported):
    # What `reweight --out RUN` over an existing run used to leave: new weights.json, the old data/.
    (run / "weights.json").write_text(json.dumps({"method": "manual", "sources": {"clean": 0.1, "noisy": 0.9}}))
    fails_cleanly(["export", run, "--out", exported],
                  [f"{run / 'data'} was drawn from other weights", f"curate resample {run} --budget 40", "again"],
                  folders=[run, exported])


def test_card_weights_are_those_the_rows_were_drawn_from(run, arith_db, tmp_path):
    other = tmp_path / "other"
    ok("resample", run, "--budget", 20, "--db", arith_db, "--out", other, "-q")
    (run / "weights.json").write_text(json.dumps({"method": "manual", "sources": {"clean": 0.5, "noisy": 0.5}}))
    ok("resample", run, "--budget", 20, "--db", arith_db, "-q")
    for folder, weights in ((run, {"clean": 0.5, "noisy": 0.5}), (other, WEIGHTS["sources"])):
        out = tmp_path / f"export-{folder.name}"
        ok("export", folder, "--out", out, "-q")
        assert card_weights(out) == weights
        sha = json.loads((folder / "manifest.json").read_text())["input_fingerprint"]["weights_sha256"]
        assert f"| weights sha256 (rows drawn from) | `{sha}` |" in (out / "README.md").read_text()
        assert yaml.safe_load((out / "README.md").read_text().split("---\n")[1])["dataset_info"]["splits"][0][
            "num_examples"] == 20


def test_weights_that_are_json_but_not_an_object(run, exported):
    (run / "weights.json").write_text("[0.5, 0.5]")
    fails_cleanly(["export", run, "--out", exported], ["weights.json is JSON but not an object (list)"],
                  folders=[run, exported])


# --- filesystem faults -----------------------------------------------------------------------------------------


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_output_folder(run, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        line = fails_cleanly(["export", run, "--out", parent / "mix"], ["permission denied", str(parent / "mix"),
                                                                         f"make {parent} writable"],
                             folders=[run, parent])
    finally:
        parent.chmod(0o755)
    assert ".tmp" not in line and "unexpected" not in line
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_full_disk_keeps_the_previous_export_and_no_temporaries(run, exported, monkeypatch, fmt):
    import polars as pl
    import pyarrow.parquet

    def full_pyarrow(self, table, **kwargs):  # the shard is open: the error PyArrow gives (errno, no file name)
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    def full_polars(self, where, **kwargs):  # Polars: an OSError without errno, the code only in its text
        where.write(b'{"half": ')  # the shard is written batch by batch into one open file
        raise OSError("No space left on device (os error 28)")

    if fmt == "parquet":
        monkeypatch.setattr(pyarrow.parquet.ParquetWriter, "write_table", full_pyarrow)
    else:
        monkeypatch.setattr(pl.DataFrame, "write_ndjson", full_polars)
    line = fails_cleanly(["export", run, "--format", fmt, "--out", exported],
                         ["no space left", str(exported), "free space"], folders=[run, exported])
    assert "unexpected" not in line
    assert leftovers(exported.parent) == []


# --- kill -9 ---------------------------------------------------------------------------------------------------

_KILLABLE = textwrap.dedent("""
    import sys, time
    import solvers.common.io as io
    real = io.settle_tree

    def settle(root):  # every shard, the card and the marker written under the temporary name; not yet renamed
        print("READY", flush=True)
        time.sleep(120)

    io.settle_tree = settle
    from curate.cli import app
    app(sys.argv[1:])
""")


@pytest.mark.parametrize("earlier", [True, False], ids=["over-an-export", "new-folder"])
def test_kill_mid_export_leaves_the_folder_whole_or_absent(run, tmp_path, earlier):
    out = tmp_path / "exports" / "mix"
    if earlier:
        ok("export", run, "--out", out, "--format", "jsonl", "-q")
    before = tree_digest(out)
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, "export", str(run), "--out", str(out), "--format", "hf"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stdout.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert tree_digest(out) == before  # the earlier export byte for byte, or still no folder at all
    ok("export", run, "--out", out, "--format", "hf", "-q")  # a rerun completes over what the kill left
    assert json.loads((out / "curate_export.json").read_text())["format"] == "hf"


def test_an_os_error_that_escapes_a_command_is_one_line_exit_2(run, tmp_path, monkeypatch):
    import curate.export

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "locked" / ".mix.k2j4h1x0.tmp"))

    monkeypatch.setattr(curate.export, "export_run", denied)
    line = fails_cleanly(["export", run, "--out", tmp_path / "locked" / "mix"],
                         ["permission denied on", str(tmp_path / "locked" / "mix")], folders=[run])
    assert ".tmp" not in line and "unexpected" not in line
