"""CUDA checks: bf16 autocast with fp32 weights, the memory plan against the allocator, the CLI on a GPU.

Marked ``gpu`` and skipped without a CUDA device; they never gate CI (``pytest -m gpu`` runs them).
"""

from __future__ import annotations

import pytest
import torch

from solvers.data import tokenize_rows
from solvers.lm import tiny_llama
from solvers.memory import ModelShape, estimate
from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def sets(tokenizer, arithmetic_rows, max_len=32):
    prompts, responses, source_ids = [], [], []
    for k, noise in enumerate([0.0, 1.0]):
        p, r = arithmetic_rows(200, seed=k, noise=noise)
        prompts, responses, source_ids = prompts + p, responses + r, source_ids + [k] * len(p)
    vp, vr = arithmetic_rows(64, seed=9)
    return (tokenize_rows(tokenizer, prompts, responses, source_ids, ["clean", "noisy"], max_len, template="plain"),
            tokenize_rows(tokenizer, vp, vr, [0] * len(vp), ["target"], max_len, template="plain"))


def test_bf16_autocast_keeps_the_weights_fp32_and_learns(arithmetic_tokenizer, arithmetic_rows):
    train, val = sets(arithmetic_tokenizer, arithmetic_rows)
    cfg = ScaleBiOConfig(steps=150, batch_size=32, val_batch_size=32, autocast_bf16=True, lr_lambda=0.05)
    model = tiny_llama(len(arithmetic_tokenizer), hidden=64, layers=2, heads=2, max_len=32).cuda()
    result = fit(model, *make_samplers(train, val, cfg), cfg)
    assert next(result.model.parameters()).dtype == torch.float32  # autocast, not a bf16 model
    assert result.weights["clean"] > 0.6 > result.weights["noisy"]
    losses = [row["target_loss"] for row in result.trajectory]
    assert all(map(lambda x: x == x, losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_plan_is_within_a_factor_of_the_allocator_peak(arithmetic_tokenizer, arithmetic_rows, checkpointing):
    """The plan's estimate of a full ScaleBiO run against torch.cuda.max_memory_allocated (fp32, no autocast)."""
    vocab, hidden, layers, seq, batch = 4096, 256, 4, 128, 16
    train, val = sets(arithmetic_tokenizer, arithmetic_rows, max_len=seq)
    model = tiny_llama(vocab, hidden=hidden, layers=layers, heads=4, max_len=seq).cuda()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    cfg = ScaleBiOConfig(steps=3, batch_size=batch, val_batch_size=batch, gradient_checkpointing=checkpointing)
    fit(model, *make_samplers(train, val, cfg), cfg, consume=True)  # as curate reweight runs it
    measured = torch.cuda.max_memory_allocated() - base + sum(p.numel() * 4 for p in model.parameters())
    shape = ModelShape.from_config(model.config)
    planned = estimate(shape, "full", batch, seq, checkpointing=checkpointing).total
    assert 0.5 < planned / measured < 2.0, (planned, measured)


def test_cli_trains_on_the_gpu_with_bf16_by_default(arith_db, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from curate.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["reweight", "--method", "scalebio", "--db", str(arith_db), "--out", str(out),
                                   "--steps", "20", "--quiet", "device=cuda", "batch_size=8", "val_batch_size=8",
                                   "tiny.hidden=32", "tiny.layers=2", "max_len=32"])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["device"] == "cuda" and config["method_config"]["autocast_bf16"] is True
