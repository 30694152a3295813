"""Gradient checkpointing changes memory, not results: the same weights and models with it on or off."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solvers.data import tokenize_rows
from solvers.lm import tiny_llama
from solvers.scalebio import ScaleBiOConfig, fit, make_samplers
from solvers.scalebio.loop import enable_checkpointing, hf_model


def checkpointing(model) -> bool:
    hf = hf_model(model)
    return bool(getattr(hf, "is_activation_checkpointing", None) or hf.is_gradient_checkpointing)


def run(tokenizer, arithmetic_rows, **overrides):
    prompts, responses, source_ids = [], [], []
    for k, noise in enumerate([0.0, 1.0]):
        p, r = arithmetic_rows(40, seed=k, noise=noise)
        prompts, responses, source_ids = prompts + p, responses + r, source_ids + [k] * len(p)
    vp, vr = arithmetic_rows(16, seed=9)
    train = tokenize_rows(tokenizer, prompts, responses, source_ids, ["clean", "noisy"], 32, template="plain")
    val = tokenize_rows(tokenizer, vp, vr, [0] * len(vp), ["target"], 32, template="plain")
    cfg = ScaleBiOConfig(steps=6, batch_size=8, val_batch_size=8, lr_lambda=0.1, **overrides)
    model = tiny_llama(len(tokenizer), hidden=32, layers=2, heads=2, max_len=32, seed=0)
    return fit(model, *make_samplers(train, val, cfg), cfg)


@pytest.mark.parametrize("lower_level", ["full", "lora"])
def test_checkpointing_gives_the_same_run(arithmetic_tokenizer, arithmetic_rows, lower_level):
    plain = run(arithmetic_tokenizer, arithmetic_rows, lower_level=lower_level)
    ckpt = run(arithmetic_tokenizer, arithmetic_rows, lower_level=lower_level, gradient_checkpointing=True)
    assert checkpointing(ckpt.model) and not checkpointing(plain.model)
    assert abs(plain.weights["clean"] - 0.5) > 1e-3  # the weights moved, so the comparison means something
    for name in plain.weights:
        assert ckpt.weights[name] == pytest.approx(plain.weights[name], abs=1e-6)
    theirs = dict(ckpt.model.named_parameters())
    for name, param in plain.model.named_parameters():
        torch.testing.assert_close(theirs[name], param, atol=1e-6, rtol=0)


def test_checkpointing_needs_a_hugging_face_model():
    with pytest.raises(ValueError, match="Hugging Face model"):
        enable_checkpointing(nn.Linear(2, 1))
