"""Shared fixtures. Tests never touch the network: the hub is forced offline here too."""

from __future__ import annotations

import json
import os
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
