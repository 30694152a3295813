"""`max_len=auto`, the tokenization report, and refusing a run whose rows lost every label (issue "Every row
counts"), through the CLI at its defaults."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.corpus import Rows
from curate.tokens import AUTO_CEILING, resolve_max_len
from tests.conftest import write_jsonl

runner = CliRunner()


class CharTokenizer:
    """One token per character: every row's length is known exactly."""

    pad_token_id, eos_token_id, chat_template = 0, 1, None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + (ord(c) % 200) for c in text]


def _rows(prompt_lengths: list[int]) -> Rows:
    n = len(prompt_lengths)
    return Rows([f"e{i}" for i in range(n)], ["s"] * n, ["p" * k for k in prompt_lengths], ["r"] * n)


def test_auto_is_the_shortest_multiple_of_8_that_fits_99_percent_of_rows() -> None:
    """198 of 200 rows (99%) are at most 50 tokens (prompt + plain template 15 + response 1 + eos 1), two are
    300: auto keeps the 99% whole and rounds 50 up to 56; the two long rows are truncated, not sized for."""
    lengths = [33] * 150 + [10] * 48 + [283] * 2
    random.Random(0).shuffle(lengths)
    got, how = resolve_max_len("auto", CharTokenizer(), _rows(lengths), _rows([5]), "plain", None)
    assert (got, how) == (56, "auto: p99 length 50")


def test_auto_also_fits_the_target_and_respects_caps() -> None:
    tok = CharTokenizer()
    assert resolve_max_len("auto", tok, _rows([10] * 100), _rows([100] * 10), "plain", None)[0] == 120
    capped = resolve_max_len("auto", tok, _rows([10] * 100), _rows([100] * 10), "plain", 64)
    assert capped[0] == 64 and "max positions" in capped[1]
    assert resolve_max_len("auto", tok, _rows([5000]), _rows([5]), "plain", None)[0] == AUTO_CEILING
    assert resolve_max_len(96, tok, _rows([5000]), _rows([5]), "plain", None) == (96, "set")


def _ingest(tmp_path: Path, prompt: str) -> Path:
    """Two sources and a target of additions, every prompt behind a long preamble."""
    rng = random.Random(0)

    def rows(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            out.append({"instruction": f"{prompt} What is {a} + {b}?", "input": "", "output": str(a + b)})
        return out

    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "one.jsonl", rows(40))
    write_jsonl(d / "two.jsonl", rows(40))
    write_jsonl(tmp_path / "val.jsonl", rows(16))
    db = tmp_path / "c.duckdb"
    for args in ([str(d)], [str(tmp_path / "val.jsonl"), "--split", "val", "--source", "target"]):
        res = runner.invoke(app, ["ingest", *args, "--db", str(db), "--quiet"])
        assert res.exit_code == 0, res.output
    return db


PREAMBLE = ("Read the following problem carefully, think about every step, and answer with the number only. " * 3)
FAST = ["--steps", "4", "tiny.hidden=32", "batch_size=8", "val_batch_size=8"]


def test_every_response_truncated_away_exits_2_naming_the_source_and_fix(tmp_path: Path) -> None:
    db = _ingest(tmp_path, PREAMBLE)
    res = runner.invoke(app, ["reweight", "--method", "scalebio", "--target", "val", "--db", str(db), "--out",
                              str(tmp_path / "run"), *FAST, "max_len=48", "truncation=right"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if "error" in ln]
    assert len(errors) == 1, res.output
    line = errors[0]
    assert "source 'one'" in line and "rows lose every response token" in line
    assert "max_len=" in line and "truncation=keep_response" in line
    assert not (tmp_path / "run" / "weights.json").exists()


@pytest.mark.parametrize("extra", [[], ["max_len=48"]], ids=["auto", "keep_response-at-48"])
def test_defaults_keep_the_responses_and_report_it(tmp_path: Path, extra: list[str]) -> None:
    db = _ingest(tmp_path, PREAMBLE)
    run = tmp_path / "run"
    res = runner.invoke(app, ["reweight", "--method", "scalebio", "--target", "val", "--db", str(db), "--out",
                              str(run), *FAST, *extra])
    assert res.exit_code == 0, res.output
    assert "tokenization: max_len" in res.output
    report = json.loads((run / "diagnostics.json").read_text())["tokenization"]
    assert report["truncation"] == "keep_response"
    assert report["sources"]["one"]["no_labels"] == 0 and report["target"]["usable"] == report["target"]["rows"] > 10
    if extra:
        one = report["sources"]["one"]
        assert report["max_len"] == 48 and one["truncated"] == one["rows"] > 20
    else:
        assert report["chosen"].startswith("auto") and report["sources"]["one"]["truncated"] == 0
    target_loss = pq.read_table(run / "trajectory.parquet", columns=["target_loss"]).column(0).to_pylist()
    assert min(target_loss) > 0.1
