import math

import pytest
import torch

from solvers.data import TokenizedSet
from solvers.sft import finetune, lr_at


def _run(copy_task, make_model, seed, steps=8, dropout=0.0, **kw):
    model = make_model(copy_task["tok"])
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = dropout
    return finetune(model, copy_task["train"], steps=steps, lr=3e-3, batch_size=8, seed=seed, **kw)


def test_same_seed_same_parameters_and_rng_untouched(copy_task, make_model):
    # dropout on, so the result depends on the torch RNG as well as on the row order
    before = torch.get_rng_state()
    m1, h1 = _run(copy_task, make_model, seed=7, dropout=0.2)
    torch.manual_seed(1234)  # the caller's RNG state must not leak into the run
    m2, h2 = _run(copy_task, make_model, seed=7, dropout=0.2)
    torch.set_rng_state(before)
    _run(copy_task, make_model, seed=7, dropout=0.2)
    assert torch.equal(before, torch.get_rng_state())  # ... nor the run into the caller's
    assert h1["loss"] == h2["loss"]
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    m3, h3 = _run(copy_task, make_model, seed=8, dropout=0.2)
    assert h3["loss"] != h1["loss"]  # a different row order
    assert any(not torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters(), strict=True))


def test_history_and_callback(copy_task, make_model):
    seen = []
    _, h = _run(copy_task, make_model, seed=0, steps=5,
                on_step=lambda record: seen.append((record["step"], record["loss"])))
    assert set(h) == {"loss", "lr", "grad_norm", "n_tokens"}
    assert all(len(v) == 5 for v in h.values())
    assert seen == list(enumerate(h["loss"]))
    assert all(n > 0 for n in h["n_tokens"])


def test_weight_decay_spares_norms(copy_task, make_model):
    # one step from the same init sees the same gradients with or without decay: only decayed tensors differ
    m0, _ = _run(copy_task, make_model, seed=0, steps=1, weight_decay=0.0)
    m1, _ = _run(copy_task, make_model, seed=0, steps=1, weight_decay=0.5)
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    norms = [n for n in p0 if n.endswith("norm.weight")]
    assert norms and all(torch.equal(p0[n], p1[n]) for n in norms)
    assert not torch.equal(p0["lm_head.weight"], p1["lm_head.weight"])


def test_lr_schedule():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[-1] < 0.001
    assert lr_at(0, 5, 2.0, 0) == 2.0  # no warmup: the first step uses the peak


def test_rejects_bad_arguments(copy_task, make_model):
    model = make_model(copy_task["tok"])
    empty = TokenizedSet([], [], __import__("numpy").zeros(0, dtype="int64"), ["a"])
    with pytest.raises(ValueError, match="no rows"):
        finetune(model, empty, steps=1, lr=1e-3, batch_size=1, seed=0)
    for kw in ({"steps": 0}, {"lr": 0.0}, {"batch_size": 0}, {"warmup_ratio": 1.0}):
        args = {"steps": 1, "lr": 1e-3, "batch_size": 1, "seed": 0, **kw}
        with pytest.raises(ValueError):
            finetune(model, copy_task["train"], **args)


def test_nan_loss_raises(copy_task, make_model):
    model = make_model(copy_task["tok"])
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        finetune(model, copy_task["train"], steps=2, lr=1e-3, batch_size=4, seed=0)
