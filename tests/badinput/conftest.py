"""The bad-input corpus: every case runs the real CLI and checks the exit code, a one-line message that names the
thing and the fix (no traceback), and that what was stored or written before is unchanged.

Helpers (import them from ``tests.badinput.conftest``):

- :func:`store_digest` - a hash of everything in a store's tables (rows, rejects, ledger, runs);
- :func:`tree_digest` - a hash of every file (path and bytes) under a folder;
- :func:`fails_cleanly` - run ``curate ARGS`` and assert exit code, one message line containing ``expect``, no
  traceback, and unchanged store and folders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def store_digest(db: Path) -> str:
    """A hash of every row of every table in ``db`` (a missing file hashes as ``missing``)."""
    import duckdb

    if not db.exists():
        return "missing"
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        parts = [(t, sorted(map(repr, con.execute(f'SELECT * FROM "{t}"').fetchall()))) for t in tables]
    finally:
        con.close()
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def tree_digest(folder: Path) -> str:
    """A hash of the relative path and bytes of every file under ``folder`` (``missing`` when it does not exist)."""
    if not folder.exists():
        return "missing"
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def fails_cleanly(args: Sequence[str], expect: str | Sequence[str], *, db: Path | None = None,
                  folders: Sequence[Path] = (), code: int = 2) -> str:
    """Run ``curate args``; assert exit ``code``, exactly one non-empty output line containing every ``expect``,
    no traceback, and ``db`` and ``folders`` unchanged. Returns the line."""
    expected = [expect] if isinstance(expect, str) else list(expect)
    before = (store_digest(db) if db else None, [tree_digest(f) for f in folders])
    res = runner.invoke(app, [str(a) for a in args])
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    assert len(lines) == 1, res.output
    for e in expected:
        assert e in lines[0], lines[0]
    assert (store_digest(db) if db else None, [tree_digest(f) for f in folders]) == before
    return lines[0]


def interruptible() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C: a shell runs background jobs (``make test &``, CI
    wrappers) with SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ingest(*args: object):
    """``curate ingest ARGS`` through the runner."""
    return runner.invoke(app, ["ingest", *map(str, args)])


def query(db: Path, sql: str, args: list | None = None) -> list[tuple]:
    """Rows of ``sql`` on ``db`` opened read-only (and closed again, so the CLI can open it next)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, args or []).fetchall()
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path, corpus: Path) -> Path:
    """A store holding the shared ``corpus`` fixture."""
    path = tmp_path / "c.duckdb"
    res = ingest(corpus, "--db", path)
    assert res.exit_code == 0, res.output
    return path
