"""Every baseline's training loop runs the model in train mode, its scoring passes in eval mode, whatever mode
the model arrived in (``from_pretrained`` returns eval mode, which would leave dropout silently off).

The model is a tiny GPT-2 with every dropout at 0.1, in eval mode; a forward pre-hook (a plain function, so deep
copies keep it and log to the same list) records each pass's mode, its Dropouts' modes and whether grad was on.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines import DoremiConfig, LessConfig, RhoConfig, run
from baselines.scoring import fit_reference

transformers = pytest.importorskip("transformers")


def dropout_gpt2(vocab: int, max_len: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=max_len, vocab_size=vocab,
                                  resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return transformers.GPT2LMHeadModel(cfg).eval()  # as from_pretrained returns it


def record(model: nn.Module) -> list[dict]:
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({"module": id(module), "training": module.training,
                      "dropout": {m.training for m in module.modules() if isinstance(m, nn.Dropout)},
                      "grad": torch.is_grad_enabled()})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def train_mode(call: dict) -> bool:
    return call["training"] and call["dropout"] == {True}


def eval_mode(call: dict) -> bool:
    return not call["training"] and call["dropout"] == {False}


@pytest.fixture
def setup(planted):
    model = dropout_gpt2(len(planted.tokenizer), max_len=64)  # the planted rows are at most 64 tokens
    return model, record(model)


def assert_untouched(model: nn.Module, calls: list[dict]) -> None:
    # Methods train copies, never the caller's model (RHO does score it, in eval mode), and leave its mode alone.
    assert all(c["module"] != id(model) for c in calls if c["grad"])
    assert not any(m.training for m in model.modules())


def test_reference_finetune_trains_in_train_mode(planted, setup):
    model, calls = setup
    tuned = fit_reference(model, planted.pretrain, steps=3, lr=1e-3, batch_size=8, seed=0)
    assert len(calls) == 3 and all(train_mode(c) and c["grad"] for c in calls), calls
    assert not tuned.training
    assert_untouched(model, calls)


def split_by_grad(calls: list[dict]) -> tuple[list[dict], list[dict]]:
    trained, scored = [c for c in calls if c["grad"]], [c for c in calls if not c["grad"]]
    assert trained and scored
    return trained, scored


def test_rho_trains_the_reference_in_train_mode_and_scores_in_eval_mode(planted, setup):
    model, calls = setup
    cfg = RhoConfig(reference_steps=3, reference_lr=1e-3, reference_batch_size=8, batch_size=64, select_fraction=0.2)
    run("rho", cfg, counts=planted.counts, model=model, train=planted.train, target=planted.target)
    trained, scored = split_by_grad(calls)
    assert len(trained) == 3 and all(train_mode(c) for c in trained), trained
    assert all(eval_mode(c) for c in scored), scored
    assert_untouched(model, calls)


def test_doremi_trains_reference_and_proxy_in_train_mode(planted, setup):
    model, calls = setup
    cfg = DoremiConfig(reference_data="target", reference_steps=2, proxy_steps=3, reference_lr=1e-3, proxy_lr=1e-3,
                       batch_size=10)
    run("doremi", cfg, counts=planted.counts, model=model, train=planted.train, target=planted.target)
    trained, scored = split_by_grad(calls)
    assert len(trained) == 2 + 3 and all(train_mode(c) for c in trained), trained
    assert len(scored) == 3 and all(eval_mode(c) for c in scored), scored  # the reference's loss each proxy step
    assert_untouched(model, calls)


def test_less_warmup_trains_in_train_mode_and_gradient_features_in_eval_mode(planted, setup):
    model, calls = setup
    cfg = LessConfig(lr=1e-3, warmup_epochs=1, warmup_batch_size=8, lora_r=4, proj_dim=64, proj_chunk_rows=64,
                     select_fraction=0.2)
    steps: list[dict] = []
    run("less", cfg, counts=planted.counts, model=model, train=planted.train, target=planted.target,
        on_step=steps.append)
    n = sum(s["stage"] == "less_warmup" for s in steps)
    assert n > 0 and len(calls) > n
    assert all(train_mode(c) for c in calls[:n]), calls[:n]  # the warmup comes first ...
    assert all(eval_mode(c) for c in calls[n:])  # ... then only gradient features, in eval mode
    assert_untouched(model, calls)
