"""`curate compare --proxy-model`: methods learn with a small proxy, every arm fine-tunes and evaluates --model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()
SMALL = ["--seeds", "1", "--budget", "40", "recipe.steps=5", "recipe.eval_limit=4", "template=plain",
         "max_len=32", "tiny.hidden=32", "doremi.reference_steps=5", "doremi.proxy_steps=5", "doremi.batch_size=8",
         "doremi.reference_data=target"]


@pytest.fixture
def big_model(tmp_path, seeded):
    """A local HF folder, wider than the tiny proxy and with its own (smaller) tokenizer."""
    from curate.modeling import save_pretrained
    from solvers.lm import tiny_llama, train_tokenizer

    texts = [f"{a}+{b}=\n### Response:\n{a + b}" for a in range(21) for b in range(21)]
    with seeded(0):
        tok = train_tokenizer(texts, vocab_size=150)
        model = tiny_llama(len(tok), hidden=48, layers=2, heads=4, max_len=64, seed=0)
    return save_pretrained(tmp_path / "big", model, tok)


def _config(run) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_methods_learn_on_the_proxy_and_every_arm_trains_the_model(tmp_path, arith_db, big_model):
    out = tmp_path / "cmp"
    args = ["compare", "--db", str(arith_db), "--out", str(out), "--methods", "uniform,doremi", "--model",
            str(big_model), "--proxy-model", "tiny", "--also-full", *SMALL]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "summary.json").read_text())
    assert set(report["methods"]) == {"uniform", "doremi", "doremi@full"}  # uniform learns nothing: no @full arm
    assert report["headline_method"] == "doremi"  # the proxy-learned method, compared with its @full twin
    meta = report["meta"]
    assert meta["proxy_model"] == "tiny" and meta["model"] == str(big_model)
    assert any("proxy tiny" in n and "tokenizers may differ" in n.lower() for n in meta["notes"])
    proxy, base = out / "proxy" / "seed0" / "base_model", out / "base" / "seed0" / "base_model"
    assert _config(out / "runs" / "doremi-seed0")["model"] == str(proxy)
    assert _config(out / "runs" / "doremi@full-seed0")["model"] == str(base)
    proxy_cfg = json.loads((proxy / "config.json").read_text())
    base_cfg = json.loads((base / "config.json").read_text())
    assert (proxy_cfg["hidden_size"], base_cfg["hidden_size"]) == (32, 48)
    assert proxy_cfg["vocab_size"] != base_cfg["vocab_size"]  # the tokenizers differ; weights still transfer
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("reused") == 3


def test_also_full_needs_a_proxy(tmp_path, arith_db):
    res = runner.invoke(app, ["compare", "--db", str(arith_db), "--out", str(tmp_path / "c"), "--also-full",
                              *SMALL])
    assert res.exit_code == 2 and "--proxy-model" in res.output
    assert not (tmp_path / "c").exists()
