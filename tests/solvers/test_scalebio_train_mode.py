"""Training passes run in train mode and scoring passes in eval mode, whatever mode the model arrived in.

``from_pretrained`` hands back a model in eval mode; a GPT-2-style model then has dropout silently off unless the
training loop switches it on. The model here is a tiny GPT-2 with every dropout at 0.1, put in eval mode first;
a forward pre-hook records the mode of each pass (and of every Dropout inside it).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solvers.scalebio import ScaleBiOConfig, fit, make_samplers
from solvers.sft import finetune
from tests.solvers.conftest import small_sets

transformers = pytest.importorskip("transformers")

SOURCES = ["a", "b"]
TRAIN_BATCH, VAL_BATCH = 6, 4  # different sizes tell the training batch from the target batch


def dropout_gpt2(vocab: int, seed: int = 0) -> nn.Module:
    """A 2-layer GPT-2 with non-zero dropout everywhere, in eval mode as ``from_pretrained`` returns it."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab,
                                  resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    return model


def record(model: nn.Module) -> list[dict]:
    """Log every forward of ``model`` (and of its deep copies: the hook is a plain function, so copies share the
    list): which module, its mode, the modes of its Dropouts, the batch size and whether grad was on."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        calls.append({"module": id(module), "training": module.training,
                      "dropout": {m.training for m in module.modules() if isinstance(m, nn.Dropout)},
                      "rows": int(ids.shape[0]), "grad": torch.is_grad_enabled()})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


@pytest.fixture(scope="module")
def sets(arithmetic_tokenizer, arithmetic_rows):
    return small_sets(arithmetic_tokenizer, arithmetic_rows, SOURCES)


def in_train_mode(call: dict) -> bool:
    return call["training"] and call["dropout"] == {True}


def in_eval_mode(call: dict) -> bool:
    return not call["training"] and call["dropout"] == {False}


@pytest.mark.parametrize("lower_level", ["full", "lora"])
@pytest.mark.parametrize("eval_mode", [True, False])
def test_scalebio_trains_u_and_w_in_train_mode_and_the_target_pass_follows_eval_mode(sets, arithmetic_tokenizer,
                                                                                     eval_mode, lower_level):
    if lower_level == "lora":
        pytest.importorskip("peft")
    model = dropout_gpt2(len(arithmetic_tokenizer))
    calls = record(model)
    steps = 3
    cfg = ScaleBiOConfig(steps=steps, batch_size=TRAIN_BATCH, val_batch_size=VAL_BATCH, seed=0,
                         sampling="proportional", checkpoint_every=0, eval_mode=eval_mode, lower_level=lower_level)
    fit(model, *make_samplers(*sets, cfg), cfg)
    assert len(calls) == 3 * steps  # per step: u's training pass, w's training pass, w's target pass
    for t in range(steps):
        u_train, w_train, w_target = calls[3 * t : 3 * t + 3]
        assert (u_train["rows"], w_train["rows"], w_target["rows"]) == (TRAIN_BATCH, TRAIN_BATCH, VAL_BATCH)
        assert in_train_mode(u_train) and in_train_mode(w_train), (u_train, w_train)
        assert (in_eval_mode if eval_mode else in_train_mode)(w_target), w_target
        assert w_target["module"] == w_train["module"]
        if lower_level == "full":
            assert u_train["module"] != w_train["module"] != id(model)  # u and w are copies; model is untouched
    assert not model.training and not any(m.training for m in model.modules())


def test_scalebio_consume_leaves_the_callers_model_in_its_mode(sets, arithmetic_tokenizer):
    model = dropout_gpt2(len(arithmetic_tokenizer))
    calls = record(model)
    cfg = ScaleBiOConfig(steps=2, batch_size=TRAIN_BATCH, val_batch_size=VAL_BATCH, seed=0, sampling="proportional",
                         checkpoint_every=0)
    fit(model, *make_samplers(*sets, cfg), cfg, consume=True)
    u_calls = [c for c in calls if c["module"] == id(model)]  # consume: u is the caller's model
    assert len(u_calls) == 2 and all(in_train_mode(c) for c in u_calls)
    assert not model.training and not any(m.training for m in model.modules())


def test_finetune_trains_in_train_mode_and_restores_the_mode(sets, arithmetic_tokenizer):
    model = dropout_gpt2(len(arithmetic_tokenizer))
    calls = record(model)
    finetune(model, sets[0], steps=3, lr=1e-3, batch_size=4, seed=0)
    assert len(calls) == 3 and all(in_train_mode(c) and c["grad"] for c in calls), calls
    assert not model.training and not any(m.training for m in model.modules())


def test_finetune_restores_the_mode_after_a_failure(sets, arithmetic_tokenizer):
    model = dropout_gpt2(len(arithmetic_tokenizer))

    def fail(record):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        finetune(model, sets[0], steps=3, lr=1e-3, batch_size=4, seed=0, on_step=fail)
    assert not any(m.training for m in model.modules())


def test_dropout_is_live_in_the_training_passes(sets, arithmetic_tokenizer):
    """The mode is not cosmetic: the same seeded fine-tune ends elsewhere with dropout than with it zeroed."""
    def tuned(p: float) -> torch.Tensor:
        model = dropout_gpt2(len(arithmetic_tokenizer))
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
        finetune(model, sets[0], steps=2, lr=1e-2, batch_size=4, seed=0)
        return torch.cat([q.detach().flatten() for q in model.parameters()])

    assert not torch.equal(tuned(0.1), tuned(0.0))
