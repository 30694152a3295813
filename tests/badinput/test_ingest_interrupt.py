"""Ctrl-C and kill -9 in the middle of an ingest: exit 130 (Ctrl-C), the store as it was before the file (every table,
and what `curate sources` counts), no file left bloated by the rows that were being written, no spill files left
behind, and the same command run again stores the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

import curate.ingest.load as load
from curate.cli import app
from curate.db import MEMORY_ENV, is_bloated, spill_dir
from tests.badinput.conftest import interruptible, store_digest
from tests.conftest import alpaca_rows, write_jsonl

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to time the signal")

REPO = Path(__file__).resolve().parents[2]
ROWS = 300_000
SLACK = 1 << 20  # a store may grow by a block or two when it is opened; an aborted ingest left 13+ MB


def _big(path: Path, seed: int = 0) -> Path:
    """~45 MB of distinct alpaca rows (string formatting: a second to write, not json.dumps per row)."""
    pad = "x" * (40 + seed)
    with open(path, "w") as f:
        f.writelines(f'{{"instruction": "q{i} {pad}", "input": "", "output": "a{i} {pad}{pad}"}}\n'
                     for i in range(ROWS))
    return path


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "c.duckdb"
    small = write_jsonl(tmp_path / "small.jsonl", alpaca_rows("s", 20))
    assert CliRunner().invoke(app, ["ingest", str(small), "--db", str(path)]).exit_code == 0
    return path


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from curate.cli import app; app()", *args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, preexec_fn=interruptible)


def _wait_until_duckdb_reads(proc: subprocess.Popen, data: Path, timeout: float = 15) -> None:
    """Block until the process has read the data file once more than its hash needs: DuckDB is scanning it.

    /proc/PID/io counts every byte read; hashing reads the file once, so beyond 1.5 times its size the bytes come
    from DuckDB's reader, well before the commit.
    """
    size, base, start = data.stat().st_size, None, time.time()
    while time.time() - start < timeout:
        assert proc.poll() is None, "the ingest ended before it could be interrupted"
        rchar = int(dict(ln.split(": ") for ln in Path(f"/proc/{proc.pid}/io").read_text().splitlines())["rchar"])
        opened = str(data.resolve()) in _open_files(proc.pid)
        if base is None and opened:
            base = rchar
        if base is not None and rchar - base > 1.5 * size:
            return
        time.sleep(0.002)
    raise AssertionError("the ingest never started reading the file")


def _open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed while we looked
            pass
    return found


def test_ctrl_c_mid_ingest_exits_130_and_keeps_the_store(tmp_path, db):
    data = _big(tmp_path / "big.jsonl")
    before, size = store_digest(db), db.stat().st_size
    proc = _start(["ingest", str(data), "--db", str(db)], tmp_path)
    _wait_until_duckdb_reads(proc, data)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "big.jsonl was not stored" in lines[0], err
    assert "Traceback" not in err and "unexpected" not in err
    assert store_digest(db) == before
    assert db.stat().st_size <= size + SLACK


def test_interrupt_after_rows_were_written_rolls_back_and_compacts(tmp_path, db, monkeypatch):
    """DuckDB's SIGINT error ("Query interrupted") after the insert: exit 130, nothing kept, file not bloated."""
    data = _big(tmp_path / "big.jsonl")
    before, size = store_digest(db), db.stat().st_size

    def interrupted(*args, **kwargs):
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(load.ledger, "also_stored_as", interrupted)  # runs after every INSERT of the file
    res = CliRunner().invoke(app, ["ingest", str(data), "--db", str(db)])
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.output and "big.jsonl was not stored" in res.output
    assert store_digest(db) == before
    assert db.stat().st_size <= size + SLACK, f"{size} -> {db.stat().st_size}"


def _wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = 20) -> float:
    """Poll ``ready()`` until it holds while ``proc`` is still running; returns the seconds it took."""
    start = time.time()
    while not ready():
        assert proc.poll() is None, f"the ingest ended before {what}:\n{proc.communicate()}"
        assert time.time() - start < timeout, f"the ingest never {what}"
        time.sleep(0.002)
    return time.time() - start


def _sources(db: Path) -> str:
    res = CliRunner().invoke(app, ["sources", "--db", str(db)])
    assert res.exit_code == 0, res.output
    return res.output


def _killed_midway(tmp_path: Path, db: Path, ready, what: str, env: dict[str, str] | None = None) -> int:
    """Start ``curate ingest big.jsonl``, SIGKILL it once ``ready()`` holds, check the store is as it was; returns
    the killed process's id."""
    data = _big(tmp_path / "big.jsonl")
    before, listing = store_digest(db), _sources(db)
    proc = _start(["ingest", str(data), "--db", str(db)], tmp_path, env=env)
    try:
        _wait_until(proc, ready, what)
    finally:
        proc.kill()  # SIGKILL: no rollback, no cleanup
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert store_digest(db) == before  # every table, row for row
    assert _sources(db) == listing  # `curate sources` opens it and counts the same
    return proc.pid


def _rerun_stores_the_file(tmp_path: Path, db: Path) -> None:
    again = CliRunner().invoke(app, ["ingest", str(tmp_path / "big.jsonl"), "--db", str(db), "--quiet"])
    assert again.exit_code == 0, again.output
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT content_hash) FROM examples WHERE source = 'big'"
                           ).fetchone() == (ROWS, ROWS)
        assert not is_bloated(con, db)  # the blocks the killed write left were given back
    finally:
        con.close()


def test_kill_9_mid_ingest_leaves_the_store_intact(tmp_path, db):
    """Killed while DuckDB writes the file's rows into the store (the store file has grown by megabytes)."""
    size = db.stat().st_size
    _killed_midway(tmp_path, db, lambda: db.stat().st_size > size + 4 * SLACK, "wrote rows into the store")
    assert not list(tmp_path.glob("c.duckdb.tmp/*"))
    _rerun_stores_the_file(tmp_path, db)


def test_kill_9_while_spilling_leaves_no_spill_files_and_reruns(tmp_path, db, monkeypatch):
    """Under a small memory cap DuckDB spills to ``<db>.tmp`` while it reads; a kill leaves those files, and the
    next open of the store removes them."""
    spill = spill_dir(db)

    def spilling() -> bool:
        return sum(p.stat().st_size for p in spill.glob("duckdb_temp_*") if p.exists()) > SLACK

    pid = _killed_midway(tmp_path, db, spilling, "spilled", env={MEMORY_ENV: "48MB"})
    assert not [p for p in spill.glob(f"duckdb_temp_{pid}_*")]  # `curate sources` (a read-only open) removed them
    monkeypatch.setenv(MEMORY_ENV, "48MB")
    _rerun_stores_the_file(tmp_path, db)
    assert not list(spill.glob("duckdb_temp_*"))


def test_a_store_bloated_by_a_killed_write_is_compacted_when_opened(tmp_path, db):
    """A process killed inside its transaction leaves DuckDB's optimistic writes in the file; the next writable
    command gives that space back."""
    size = db.stat().st_size
    script = ("import duckdb, os, signal, sys; c = duckdb.connect(sys.argv[1]); c.execute('BEGIN'); "
              "c.execute(\"INSERT INTO example_rows (source, split, prompt, response, content_hash) SELECT 'k', "
              "'train', repeat('p', 80) || i, repeat('r', 80) || i, md5(i::VARCHAR) FROM range(1000000) t(i)\"); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", script, str(db)], check=False)
    before = store_digest(db)
    bloated = db.stat().st_size
    assert bloated > size + 10 * SLACK  # the situation this guards against
    small = write_jsonl(tmp_path / "next.jsonl", alpaca_rows("n", 3))
    res = CliRunner().invoke(app, ["ingest", str(small), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert db.stat().st_size <= size + SLACK, f"{size} -> {bloated} -> {db.stat().st_size}"
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM examples WHERE source = 'k'").fetchone() == (0,)
    finally:
        con.close()
    assert before != store_digest(db)  # next.jsonl is in; the killed rows never were
