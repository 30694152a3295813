"""Shared fixtures. Tests never touch the network: the hub is forced offline here too.

Determinism: a test's result must not depend on which tests ran before it, nor on the subset being run.
- Every test starts from fixed seeds (``random``, numpy, torch) and one torch thread (``_seed_each_test``);
  the states it found are restored after it.
- Module- and session-scoped fixtures are set up before that per-test fixture, so each one that trains,
  samples or builds a tokenizer wraps its body in ``seeded(seed)`` itself.
- One torch thread everywhere (``seeded`` pins it too): a CPU matmul sums in a different order with 2 threads,
  and a tiny model's training turns that rounding difference into a different result (DoReMi's domain ranking
  on the planted corpus changed with the thread count).
- The BPE tokenizers the fixtures train were measured not to depend on the thread count: the same vocab and
  merges with ``RAYON_NUM_THREADS`` 1 and 2, in fresh processes and repeated in one, so nothing is pinned there.
- pytest-randomly (the dev extra) shuffles the order and reseeds ``random``/numpy per test phase; the suite
  must pass with it on and with ``-p no:randomly``. The seed it used is printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TEST_SEED = 0  # what every test starts from (pytest-randomly reseeds random/numpy again before the test body)


def _torch():
    try:
        import torch
    except ImportError:  # the base install's tests run without torch
        return None
    return torch


@contextlib.contextmanager
def seeded(seed: int, threads: int = 1) -> Iterator[None]:
    """Run a block under explicit seeds (``random``, numpy, torch) and ``threads`` torch intra-op threads.

    The RNG states and thread count found on entry are restored on exit, so the block neither depends on nor
    leaks into what ran around it.
    """
    torch = _torch()
    py_state, np_state = random.getstate(), np.random.get_state()
    if torch is not None:
        torch_state, n_threads = torch.random.get_rng_state(), torch.get_num_threads()
    random.seed(seed)
    np.random.seed(seed)
    if torch is not None:
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if torch is not None:
            torch.random.set_rng_state(torch_state)
            torch.set_num_threads(n_threads)


@pytest.fixture(name="seeded", scope="session")
def _seeded_fixture():
    """:func:`seeded` as a fixture, for conftests and test modules (which need not import this conftest)."""
    return seeded


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for every fixture, whatever its scope (autouse session fixtures are set up first)."""
    torch = _torch()
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_each_test():
    with seeded(TEST_SEED):
        yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name pytest-randomly's seed where it is seen even under ``-q`` (which hides the report header)."""
    if config.pluginmanager.hasplugin("randomly") and config.getoption("randomly_seed", None) is not None:
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(f"pytest-randomly: --randomly-seed={seed} (rerun the same order and seeds "
                                    f"with -p randomly --randomly-seed={seed})")


@pytest.fixture
def umask():
    """``umask(mask)`` for one test; the caller's umask is restored afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    try:
        yield os.umask
    finally:
        os.umask(before)


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings taken verbatim) as JSONL."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def alpaca_rows(prefix: str, n: int) -> list[dict]:
    return [{"instruction": f"{prefix} question {i}", "input": "", "output": f"{prefix} answer {i}"} for i in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Three small sources in a folder: alpaca, sharegpt and prompt/response."""
    d = tmp_path / "corpus"
    d.mkdir()
    write_jsonl(d / "math.jsonl", alpaca_rows("math", 30))
    write_jsonl(d / "chat.jsonl", [
        {"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"hello {i}"}]}
        for i in range(20)])
    write_jsonl(d / "code.jsonl", [{"prompt": f"write f{i}", "response": f"def f{i}(): pass"} for i in range(10)])
    return d


def _arith(n: int, noise: float, seed: int) -> list[dict]:
    """2-term addition rows; a share ``noise`` of answers replaced by random numbers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        ans = str(a + b) if rng.random() >= noise else str(rng.randint(0, 40))
        rows.append({"instruction": f"{a}+{b}=", "input": "", "output": ans})
    return rows


@pytest.fixture
def arith_db(tmp_path: Path) -> Path:
    """A store with clean and fully corrupted arithmetic sources plus val and test target rows."""
    d = tmp_path / "data"
    d.mkdir()
    for name, noise, seed in (("clean", 0.0, 1), ("noisy", 1.0, 2)):
        write_jsonl(d / f"{name}.jsonl", _arith(60, noise, seed))
    write_jsonl(tmp_path / "val.jsonl", _arith(30, 0.0, 3))
    write_jsonl(tmp_path / "test.jsonl", _arith(20, 0.0, 4))
    from typer.testing import CliRunner

    from curate.cli import app

    db = tmp_path / "c.duckdb"
    for args in ([str(d)], [str(tmp_path / "val.jsonl"), "--split", "val", "--source", "target"],
                 [str(tmp_path / "test.jsonl"), "--split", "test", "--source", "target"]):
        res = CliRunner().invoke(app, ["ingest", *args, "--db", str(db), "--quiet"])
        assert res.exit_code == 0, res.output
    return db


