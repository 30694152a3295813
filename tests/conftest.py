"""Shared fixtures. Tests never touch the network: the hub is forced offline here too."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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


