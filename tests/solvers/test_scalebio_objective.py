"""Pure maths of ScaleBiO: simplex maps, the per-source weighted loss, and the λ-gradient (ALGORITHMS.md
§1.7)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers.data import tokenize_rows
from solvers.lm import per_example_loss, tiny_llama, token_mean_loss
from solvers.scalebio.objective import lambda_grad, source_means, surrogate, weighted_source_loss
from solvers.scalebio.simplex import effective_sources, entropy, weights
from solvers.scalebio.step import accumulate_grads, init_state

finite = st.floats(min_value=-30, max_value=30, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=1, max_size=12))
def test_weights_lie_on_the_simplex(logits):
    p = weights(torch.tensor(logits, dtype=torch.float64))
    assert torch.all(p >= 0)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert 1.0 - 1e-9 <= effective_sources(p) <= len(logits) + 1e-9


def test_weights_are_fp32_for_low_precision_logits():
    assert weights(torch.zeros(3, dtype=torch.bfloat16)).dtype == torch.float32
    assert weights(torch.zeros(3, dtype=torch.float64)).dtype == torch.float64


def test_entropy_of_uniform_and_one_hot():
    assert entropy(torch.full((4,), 0.25)) == pytest.approx(math.log(4))
    assert effective_sources(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)


def test_weighted_source_loss_matches_a_hand_loop():
    losses = torch.tensor([1.0, 3.0, 2.0, 10.0, 4.0])
    sources = torch.tensor([0, 0, 1, 3, 0])  # source 2 is absent
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    expected = 0.0
    for s in range(4):
        members = [float(v) for v, k in zip(losses, sources, strict=True) if k == s]
        expected += float(p[s]) * (sum(members) / len(members) if members else 0.0)
    assert float(weighted_source_loss(losses, sources, p, 4)) == pytest.approx(expected)
    assert source_means(losses, sources, 4).tolist() == pytest.approx([8 / 3, 2.0, 0.0, 10.0])


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=2, max_size=8), st.data())
def test_lambda_grad_closed_form_matches_autograd_on_the_surrogate(logits, data):
    k = len(logits)
    lbar_u = torch.tensor(data.draw(st.lists(finite, min_size=k, max_size=k)), dtype=torch.float64)
    lbar_w = torch.tensor(data.draw(st.lists(finite, min_size=k, max_size=k)), dtype=torch.float64)
    lam = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    p = weights(lam)
    surrogate(p, lbar_u, lbar_w, torch.tensor(0.0, dtype=torch.float64), alpha=7.0).backward()
    closed = lambda_grad(p.detach(), lbar_w, lbar_u, alpha=7.0)
    torch.testing.assert_close(lam.grad, closed, atol=1e-9, rtol=1e-9)
    assert abs(float(closed.sum())) < 1e-9 * (1 + float(closed.abs().sum()))


@pytest.fixture(scope="module")
def fp64_setup(arithmetic_tokenizer, arithmetic_rows, seeded):
    prompts, responses = arithmetic_rows(9, seed=1)
    sources = [0, 1, 2, 0, 1, 2, 0, 1, 0]
    train = tokenize_rows(arithmetic_tokenizer, prompts, responses, sources, ["a", "b", "c"], 32, "plain")
    vp, vr = arithmetic_rows(4, seed=2)
    val = tokenize_rows(arithmetic_tokenizer, vp, vr, [0] * 4, ["val"], 32, "plain")
    with seeded(0):
        model = tiny_llama(len(arithmetic_tokenizer), hidden=16, layers=2, heads=2, max_len=32, seed=0).double()
        state = init_state(model, 3, 1e-3, 1e-2, 0.0, 0.0)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            state.logits.copy_(torch.tensor([0.3, -0.5, 0.1]))
            for param in state.w.parameters():  # u and w must differ for the gap to be informative
                param.add_(1e-2 * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    return state, train.batch(range(len(train))), val.batch(range(len(val)))


def test_step_lambda_gradient_is_the_closed_form_in_fp64(fp64_setup):
    state, train_batch, val_batch = fp64_setup
    losses = accumulate_grads(state, train_batch, val_batch, alpha=10.0, n_sources=3)
    closed = lambda_grad(losses.p, losses.lbar_w, losses.lbar_u, alpha=10.0)
    assert float((losses.lbar_w - losses.lbar_u).abs().max()) > 1e-4
    torch.testing.assert_close(state.logits.grad, closed, atol=1e-14, rtol=1e-12)
    assert abs(float(state.logits.grad.sum())) < 1e-14


def test_step_gives_each_variable_its_own_gradient(fp64_setup):
    """u gets ∇L2(λ,u), w gets ∇[L1 + α L2(λ,w)]: the same as a single backward of the surrogate."""
    state, train_batch, val_batch = fp64_setup
    alpha = 10.0
    accumulate_grads(state, train_batch, val_batch, alpha=alpha, n_sources=3)
    staged = {n: p.grad.clone() for n, p in list(state.u.named_parameters()) + [("lam", state.logits)]}
    staged_w = {n: p.grad.clone() for n, p in state.w.named_parameters()}

    p = weights(state.logits)
    src = train_batch["source_ids"]
    for model in (state.u, state.w):
        model.zero_grad(set_to_none=True)
    state.logits.grad = None
    own_u = weighted_source_loss(per_example_loss(state.u, train_batch), src, p.detach(), 3)
    u_grads = torch.autograd.grad(own_u, list(state.u.parameters()))
    own_w = token_mean_loss(state.w, val_batch) + alpha * weighted_source_loss(
        per_example_loss(state.w, train_batch), src, p.detach(), 3)
    w_grads = torch.autograd.grad(own_w, list(state.w.parameters()))
    for (name, _), g in zip(state.u.named_parameters(), u_grads, strict=True):
        torch.testing.assert_close(staged[name], g, atol=1e-13, rtol=1e-10)
    for (name, _), g in zip(state.w.named_parameters(), w_grads, strict=True):
        torch.testing.assert_close(staged_w[name], g, atol=1e-13, rtol=1e-10)
