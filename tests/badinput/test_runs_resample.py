"""Bad input to `curate resample`: budgets, --out, weights files, the store a run was made from, filesystem faults
and a kill. Each case runs the real CLI and checks the exit code, the one-line message, and that the store and
every run folder are unchanged (or, for --out, that only the named folder was written)."""

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
from typer.testing import CliRunner

from curate.cli import app
from curate.sampling import DEFAULT_MAX_EPOCHS, MAX_PASSES, MAX_ROWS
from tests.badinput.conftest import fails_cleanly, store_digest, tree_digest

runner = CliRunner()
WEIGHTS = {"method": "manual", "sources": {"clean": 0.75, "noisy": 0.25}}
ROOT = Path(__file__).resolve().parents[2]


def ok(*args: object) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def make_run(folder: Path, weights: object = WEIGHTS) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.json").write_text(json.dumps(weights))
    return folder


@pytest.fixture
def run(tmp_path: Path, arith_db: Path) -> Path:
    """A run folder with weights and a first draw of 40 rows (seed 1) from ``arith_db``."""
    folder = make_run(tmp_path / "run")
    ok("resample", folder, "--budget", 40, "--seed", 1, "--db", arith_db, "-q")
    return folder


def pool_rows(db: Path) -> int:
    """Training rows of the weighted sources (``clean`` and ``noisy``), as the resampler counts them."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM examples WHERE split = 'train' AND source IN ('clean', 'noisy')")
                   .fetchall()[0][0])
    finally:
        con.close()


def source_rows(db: Path) -> dict[str, int]:
    """Training rows per weighted source (after ingest's de-duplication)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute("SELECT source, count(*) FROM examples WHERE split = 'train' "
                                "AND source IN ('clean', 'noisy') GROUP BY 1 ORDER BY 1").fetchall())
    finally:
        con.close()


def temporaries(folder: Path) -> list[str]:
    """Names the atomic writers use while writing (``.NAME.XXXXXXXX.tmp``, ``.NAME.old``) under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name.endswith((".tmp", ".old")))


def rows(run_dir: Path) -> list[dict]:
    return [r for p in sorted((run_dir / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


# --- budgets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["0", "-3"])
def test_budget_below_one_keeps_the_existing_draw(run, arith_db, budget):
    line = fails_cleanly(["resample", run, "--budget", budget, "--db", arith_db], ["--budget", "at least 1"],
                         db=arith_db, folders=[run])
    assert "data/ is kept" in line
    assert len(rows(run)) == 40


def test_budget_of_a_trillion_is_refused_before_any_row_is_read(run, arith_db):
    line = fails_cleanly(["resample", run, "--budget", 10**12, "--db", arith_db],
                         ["1,000,000,000,000 rows", f"pool of {pool_rows(arith_db)} rows", f"at most {MAX_ROWS:,}"],
                         db=arith_db, folders=[run])
    assert "GB of memory" in line


def test_budget_over_the_default_cap_names_both_flags_and_the_fix(run, arith_db):
    pool = pool_rows(arith_db)
    over = int(DEFAULT_MAX_EPOCHS) * pool + 1
    line = fails_cleanly(["resample", run, "--budget", over, "--db", arith_db],
                         [f"--budget {over:,}", f"--max-epochs {DEFAULT_MAX_EPOCHS:g} allows ({over - 1:,} rows",
                          "lower --budget", "--max-epochs none"], db=arith_db, folders=[run])
    assert "Traceback" not in line
    ok("resample", run, "--budget", over, "--max-epochs", "none", "--db", arith_db, "-q")
    assert len(rows(run)) == over  # unlimited repeats are one word away


def test_budget_over_a_hundred_passes_needs_a_stated_cap(run, arith_db, tmp_path):
    pool = pool_rows(arith_db)
    too_many = MAX_PASSES * pool + 1
    fails_cleanly(["resample", run, "--budget", too_many, "--max-epochs", "none", "--db", arith_db],
                  [f"{too_many:,} rows", f"pool of {pool} rows", "--max-epochs"], db=arith_db, folders=[run])
    ok("resample", run, "--budget", too_many, "--max-epochs", 150, "--db", arith_db, "-q")
    assert len(rows(run)) == too_many  # stated repeats are allowed, and the ceiling still applies


def test_a_source_over_the_cap_is_cut_loudly_and_recorded(run, arith_db):
    # clean (weight 0.75) asks for 300 of 400 rows, over 5 passes of its rows; the default cap keeps 4 passes and
    # noisy takes the rest.
    n = source_rows(arith_db)
    kept = 4 * n["clean"]
    assert 300 > kept and 400 - kept <= 4 * n["noisy"]
    text = ok("resample", run, "--budget", 400, "--db", arith_db, "-q")
    assert f"warning: source 'clean' hit --max-epochs 4: {kept} rows (4.00 passes over {n['clean']})" in text
    assert f"instead of the 300 its weight asks for (cut by {300 - kept})" in text
    assert f"went to the sources with rows left (noisy +{300 - kept})" in text and "--max-epochs none" in text
    got = rows(run)
    assert {s: sum(r["source"] == s for r in got) for s in n} == {"clean": kept, "noisy": 400 - kept}
    ids = [r["example_id"] for r in got]
    assert max(ids.count(i) for i in set(ids)) == 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["max_epochs"] == 4 and manifest["allocation"] == {"clean": kept, "noisy": 400 - kept}
    assert manifest["capped"] == {"clean": {"wanted": 300, "allocated": kept, "available": n["clean"],
                                            "cut": 300 - kept}}


def test_no_cap_draws_the_weights_exactly_and_warns_of_nothing(run, arith_db):
    text = ok("resample", run, "--budget", 400, "--max-epochs", "None", "--db", arith_db)
    assert "warning" not in text and "no cap" in text
    got = rows(run)
    assert sum(r["source"] == "clean" for r in got) == 300
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["max_epochs"] is None and manifest["capped"] == {}


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan", ""])
def test_bad_max_epochs_is_one_line_before_the_store_is_opened(tmp_path, value):
    folder = make_run(tmp_path / "run")
    missing = tmp_path / "missing.duckdb"
    line = fails_cleanly(["resample", folder, "--budget", 10, "--max-epochs", value, "--db", missing],
                         ["--max-epochs", "'none'"], folders=[folder])
    assert "above 0" in line
    assert not missing.exists()


def test_reweight_budget_over_the_cap_is_refused_before_training(tmp_path, arith_db):
    out = tmp_path / "rw"
    over = int(DEFAULT_MAX_EPOCHS) * pool_rows(arith_db) + 1
    fails_cleanly(["reweight", "--method", "uniform", "--budget", over, "--db", arith_db, "--out", out],
                  [f"--budget {over:,}", "--max-epochs", "--max-epochs none"], db=arith_db)
    assert not out.exists()
    fails_cleanly(["reweight", "--method", "uniform", "--budget", 10, "--max-epochs", "zero", "--db", arith_db,
                   "--out", out], ["--max-epochs 'zero'", "'none'"], db=arith_db)
    assert not out.exists()


def test_reweight_budget_applies_the_cap_and_its_flag(tmp_path, arith_db):
    from tests.conftest import alpaca_rows, write_jsonl

    ok("ingest", write_jsonl(tmp_path / "tiny.jsonl", alpaca_rows("tiny", 5)), "--db", arith_db, "-q")
    # uniform over clean (60), noisy (60) and tiny (5): 30 rows each, 6 passes over tiny; the cap keeps 20.
    text = ok("reweight", "--method", "uniform", "--budget", 90, "--db", arith_db, "--out", tmp_path / "a", "-q")
    assert "warning: source 'tiny' hit --max-epochs 4: 20 rows" in text and "cut by 10" in text
    assert {s: sum(r["source"] == s for r in rows(tmp_path / "a")) for s in ("clean", "noisy", "tiny")} == {
        "clean": 35, "noisy": 35, "tiny": 20}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["capped"]["tiny"]["cut"] == 10
    text = ok("reweight", "--method", "uniform", "--budget", 90, "--max-epochs", "none", "--db", arith_db,
              "--out", tmp_path / "b", "-q")
    assert "warning" not in text and sum(r["source"] == "tiny" for r in rows(tmp_path / "b")) == 30
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["max_epochs"] is None
    ok("reweight", "--method", "uniform", "--budget", 90, "--max-epochs", 6, "--db", arith_db, "--out",
       tmp_path / "c", "-q")
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["capped"] == {}


# --- --out ---------------------------------------------------------------------------------------------------


def test_out_draws_into_the_named_folder_and_leaves_the_run_untouched(run, arith_db, tmp_path):
    import pyarrow as pa

    ids = [r["example_id"] for r in rows(run)]
    pq.write_table(pa.table({"example_id": ids, "source": [r["source"] for r in rows(run)],
                             "score": [float(i) for i in range(len(ids))]}), run / "scores.parquet")
    before = tree_digest(run)
    out = tmp_path / "elsewhere" / "mix"
    text = ok("resample", run, "--budget", 25, "--seed", 2, "--db", arith_db, "--out", out)
    assert f"wrote {out / 'data'}" in text
    assert tree_digest(run) == before
    assert (out / "weights.json").read_bytes() == (run / "weights.json").read_bytes()
    assert (out / "scores.parquet").read_bytes() == (run / "scores.parquet").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resampled_from"] == str(run.resolve()) and manifest["budget"] == 25
    assert manifest["db"] == str(arith_db.resolve())
    assert len(rows(out)) == 25

    # An earlier --out folder may be drawn into again: replaced whole, scores dropped when the source has none.
    (run / "scores.parquet").unlink()
    ok("resample", run, "--budget", 10, "--db", arith_db, "--out", out, "-q")
    assert len(rows(out)) == 10 and not (out / "scores.parquet").exists()


def test_out_refuses_a_folder_resample_did_not_write(run, arith_db, tmp_path):
    other = make_run(tmp_path / "other-run", {"method": "manual", "sources": {"clean": 1.0}})
    ok("resample", other, "--budget", 5, "--db", arith_db, "-q")
    line = fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db, "--out", other],
                         ["--out", "non-empty folder", "new or empty folder"], db=arith_db, folders=[run, other])
    assert str(other) in line
    fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db, "--out", run / "data" / "x"],
                  ["--out", "inside"], db=arith_db, folders=[run])


# --- weights files -------------------------------------------------------------------------------------------


def test_folder_without_weights(tmp_path, arith_db):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    fails_cleanly(["resample", empty, "--budget", 10, "--db", arith_db], ["no weights.json", "curate reweight"],
                  db=arith_db, folders=[empty])


@pytest.mark.parametrize(("sources", "expect"), [
    ({"clean": 0.5, "noisy": 0.2}, "sum to 0.7"),
    ({"clean": 1.5, "noisy": -0.5}, "must be finite and >= 0"),
    ({"clean": float("nan"), "noisy": 0.5}, "must be finite and >= 0"),
    ({}, "no sources"),
], ids=["sum", "negative", "nan", "empty"])
def test_invalid_weights(run, arith_db, sources, expect):
    (run / "weights.json").write_text(json.dumps({"method": "manual", "sources": sources}))
    fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db], [expect, "weights.json"], db=arith_db,
                  folders=[run])


def test_weights_that_are_json_but_not_an_object(run, arith_db):
    (run / "weights.json").write_text(json.dumps([["clean", 0.5], ["noisy", 0.5]]))
    line = fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db], "is JSON but not an object (list)",
                         db=arith_db, folders=[run])
    assert "malformed" not in line


def test_manifest_that_is_json_but_not_an_object(run, arith_db):
    (run / "manifest.json").write_text("[]")
    fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db], ["manifest.json", "is JSON but not an object"],
                  db=arith_db, folders=[run])


# --- the store a run was made from ---------------------------------------------------------------------------


def test_without_db_the_recorded_store_is_used_and_db_still_wins(run, arith_db, tmp_path, monkeypatch, corpus):
    monkeypatch.delenv("CURATE_DB", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no curate.duckdb here
    ok("resample", run, "--budget", 12, "-q")
    assert len(rows(run)) == 12
    assert json.loads((run / "manifest.json").read_text())["db"] == str(arith_db.resolve())

    other_db = tmp_path / "other.duckdb"  # sources math/chat/code: the run's clean/noisy are not in it
    ok("ingest", corpus, "--db", other_db, "--quiet")
    fails_cleanly(["resample", run, "--budget", 12, "--db", other_db], "'clean' is not in the database",
                  db=other_db, folders=[run])


def test_recorded_store_that_moved_is_named(run, arith_db, tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_DB", raising=False)
    moved = tmp_path / "moved.duckdb"
    arith_db.rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    fails_cleanly(["resample", run, "--budget", 12], [str(arith_db.resolve()), "does not exist", "--db"],
                  db=moved, folders=[run])


# --- filesystem faults ---------------------------------------------------------------------------------------


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_run_folder(run, arith_db):
    before = tree_digest(run)
    run.chmod(0o555)
    try:
        line = fails_cleanly(["resample", run, "--budget", 10, "--db", arith_db],
                             ["permission denied", str(run), "--out"], db=arith_db, folders=[run])
    finally:
        run.chmod(0o755)
    assert ".tmp" not in line
    assert tree_digest(run) == before and temporaries(run) == []


def test_full_disk_names_the_folder_and_keeps_the_previous_draw(run, arith_db, monkeypatch):
    import solvers.common.io as io

    def full(path):  # the kernel reports ENOSPC (without a file name) when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "fsync_file", full)
    line = fails_cleanly(["resample", run, "--budget", 30, "--db", arith_db],
                         ["no space left", str(run / "data"), "free space"], db=arith_db, folders=[run])
    assert "unexpected" not in line
    assert temporaries(run) == [] and len(rows(run)) == 40


def test_full_disk_under_out_leaves_no_half_folder(run, arith_db, tmp_path, monkeypatch):
    import solvers.common.io as io

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "fsync_file", full)
    out = tmp_path / "mix"
    fails_cleanly(["resample", run, "--budget", 30, "--db", arith_db, "--out", out],
                  ["no space left", str(out / "data")], db=arith_db, folders=[run])
    assert not out.exists()  # not a folder holding weights.json and no data


# --- kill -9 -------------------------------------------------------------------------------------------------

_KILLABLE = textwrap.dedent("""
    import os, sys, time
    import solvers.common.io as io
    stage = sys.argv[1]
    real_settle, real_fsync = io.settle_tree, io.fsync_file

    def hold():
        print("READY", flush=True)
        time.sleep(120)

    def settle(root):  # data/ fully written under its temporary name, not yet renamed
        if stage == "data":
            hold()
        real_settle(root)

    def fsync(path):  # data/ renamed into place, the manifest not yet
        if stage == "manifest" and ".manifest.json." in os.fspath(path):
            hold()
        real_fsync(path)

    io.settle_tree, io.fsync_file = settle, fsync
    from curate.cli import app
    app(sys.argv[2:])
""")


def _kill_during(stage: str, args: list[str], cwd: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, stage, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stdout.read()
    finally:
        proc.kill()  # SIGKILL: no finally blocks, no cleanup
        proc.wait(timeout=30)


def test_kill_while_writing_keeps_the_previous_draw_whole(run, arith_db, tmp_path):
    before, db_before = tree_digest(run / "data"), store_digest(arith_db)
    manifest = (run / "manifest.json").read_bytes()
    _kill_during("data", ["resample", str(run), "--budget", "30", "--seed", "5", "--db", str(arith_db)], tmp_path)
    assert tree_digest(run / "data") == before and (run / "manifest.json").read_bytes() == manifest
    assert store_digest(arith_db) == db_before
    ok("export", run, "--out", tmp_path / "exported", "-q")  # still consistent
    ok("resample", run, "--budget", 30, "--seed", 5, "--db", arith_db, "-q")  # and a rerun completes
    assert len(rows(run)) == 30


def test_kill_between_data_and_manifest_is_refused_by_export_not_exported(run, arith_db, tmp_path):
    _kill_during("manifest", ["resample", str(run), "--budget", "30", "--db", str(arith_db)], tmp_path)
    assert len(rows(run)) == 30  # the new data/ is whole (it was renamed in one step) ...
    fails_cleanly(["export", run, "--out", tmp_path / "exported"],  # ... and the old manifest does not vouch for it
                  ["sha256", "curate resample", "again"], folders=[run])
    assert not (tmp_path / "exported").exists()


def test_kill_during_out_into_a_new_folder_then_rerun(run, arith_db, tmp_path):
    before = tree_digest(run)
    out = tmp_path / "mix"
    _kill_during("data", ["resample", str(run), "--budget", "30", "--db", str(arith_db), "--out", str(out)],
                 tmp_path)
    assert tree_digest(run) == before
    assert not (out / "data").exists() and not (out / "manifest.json").exists()  # only temporary names, if any
    assert all(name.startswith(".") for name in os.listdir(out))
    ok("resample", run, "--budget", 30, "--db", arith_db, "--out", out, "-q")  # what the kill left is no obstacle
    assert len(rows(out)) == 30 and (out / "weights.json").read_bytes() == (run / "weights.json").read_bytes()
