"""kill -9 in the middle of `curate resample`, for real: the process is SIGKILLed while DuckDB is writing the draw's
Parquet (no hook in the process), and at each rename that puts a new draw in place (a hook that kills itself right
after it). Afterwards the run folder holds a whole ``data/`` (the old draw, or the new one with export refusing it
until the manifest matches), the store is unchanged, and a rerun completes and clears what the kill left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.fs_errors import is_temporary
from tests.badinput.conftest import store_digest, tree_digest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and renameat2 are Linux's")

ROOT = Path(__file__).resolve().parents[2]
POOL = 150_000  # rows per source: a draw of 600,000 rows takes a few seconds to write
runner = CliRunner()


def ok(*args: object) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """A store with two sources of POOL distinct rows each, written by DuckDB and ingested (the fast path)."""
    d = tmp_path_factory.mktemp("kill9")
    con = duckdb.connect()
    for name in ("clean", "noisy"):
        con.execute(f"""COPY (SELECT '{name} question ' || i AS instruction, '' AS input,
                               '{name} answer ' || i || repeat(' with some words', 1 + i % 7) AS output
                             FROM range({POOL}) t(i)) TO '{d / f"{name}.jsonl"}' (FORMAT json)""")
    con.close()
    ok("ingest", d / "clean.jsonl", d / "noisy.jsonl", "--db", d / "c.duckdb", "-q")
    return d / "c.duckdb"


@pytest.fixture
def run(tmp_path: Path, pool: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "weights.json").write_text(json.dumps({"method": "manual", "sources": {"clean": 0.5, "noisy": 0.5}}))
    ok("resample", folder, "--budget", 1000, "--seed", 1, "--db", pool, "-q")
    return folder


def rows(run_dir: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (run_dir / "data").glob("*.parquet"))


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temporary(p.name))


def _start(args: list[str], cwd: Path, code: str = "from curate.cli import app; app()") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _parts_being_written(run_dir: Path) -> bool:
    for p in run_dir.iterdir():
        if is_temporary(p.name) and p.name.startswith(".data.") and p.is_dir():
            if any(f.stat().st_size > 0 for f in p.iterdir()):
                return True
    return False


def test_kill_9_while_the_draw_is_being_written_keeps_the_previous_draw(run, pool, tmp_path):
    before, manifest, db_before = tree_digest(run / "data"), (run / "manifest.json").read_bytes(), store_digest(pool)
    proc = _start(["resample", str(run), "--budget", str(4 * POOL), "--seed", "7", "--db", str(pool)], tmp_path)
    start = time.time()
    try:
        while not _parts_being_written(run):  # DuckDB has begun writing Parquet under the temporary name
            assert proc.poll() is None, "resample ended before it could be killed:\n" + (proc.stdout.read() or "")
            assert time.time() - start < 60, "resample never started writing"
            time.sleep(0.002)
    finally:
        proc.kill()  # SIGKILL: no finally blocks, no cleanup
        proc.communicate(timeout=30)
    assert proc.returncode == -9
    assert tree_digest(run / "data") == before and (run / "manifest.json").read_bytes() == manifest
    assert store_digest(pool) == db_before
    assert temporaries(run), "the kill should have left the half-written draw under its temporary name"
    ok("export", run, "--out", tmp_path / "exported", "-q")  # the old draw is still whole and vouched for
    ok("resample", run, "--budget", 2000, "--seed", 7, "--db", pool, "-q")  # a rerun completes ...
    assert rows(run) == 2000
    assert temporaries(run) == []  # ... and removes what the killed one left


_KILL_AT_RENAME = textwrap.dedent("""
    import ctypes, os, signal, sys
    import solvers.common.io as atomic_io
    target = int(sys.argv[1])
    calls = [0]

    def counted(real):
        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            calls[0] += 1
            if calls[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)  # right after this rename took effect
            return result
        return wrapper

    os.replace = counted(os.replace)
    atomic_io.exchange = counted(atomic_io.exchange)
    from curate.cli import app
    app(sys.argv[2:])
""")


@pytest.mark.parametrize("at", [1, 2, 3])
def test_kill_9_right_after_each_rename_leaves_a_whole_draw(run, pool, tmp_path, at):
    """The renames of a resample that replaces a draw: data/ (swapped in one step), the manifest, then the part
    files inside the new folder before it; whichever the kill follows, data/ is one whole draw and export either
    exports it or refuses it (never a folder missing or half of one)."""
    old_rows = rows(run)
    proc = _start([str(at), "resample", str(run), "--budget", "3000", "--seed", "3", "--db", str(pool)], tmp_path,
                  _KILL_AT_RENAME)
    out, _ = proc.communicate(timeout=60)
    assert (run / "data").is_dir(), out
    assert rows(run) in (old_rows, 3000), out
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "exported"), "-q"])
    if res.exit_code == 0:
        assert rows(run) == json.loads((run / "manifest.json").read_text())["rows"]
    else:
        assert "sha256" in res.output and "curate resample" in res.output, res.output
    ok("resample", run, "--budget", 3000, "--seed", 3, "--db", pool, "-q")
    assert rows(run) == 3000 and temporaries(run) == []
    ok("export", run, "--out", tmp_path / "exported2", "-q")
