"""ScaleBiO on a strongly convex bilevel problem whose optimum is computed independently.
 Three least-squares sources with different true coefficients and noise; the target set is generated from a
mixture of the source coefficients, so the best weights are interior. The exact bilevel optimum comes from the
closed-form lower-level solution w*(p) = (Σ p_s A_s)⁻¹ Σ p_s b_s minimised over the simplex by scipy (no
ScaleBiO code involved). ScaleBiO runs through the real ``fit`` loop with a linear model and squared-error
losses, with ``ScaleBiOConfig``'s defaults unchanged (only the seed, and α's growth where that is the point).

The problem is posed at an LM's parameter scale: the features are multiplied by ``SCALE`` so the optimal
coefficients are ~0.04 (an LM's weights are ~0.02-0.1), and the model starts at 0, near its optimum, as a
pretrained model does. This is a reparametrisation: predictions, losses, p* and f* are exactly those of the
unscaled problem. What it fixes is how far the models must travel per Adam step, which is what the default
step sizes are tuned for (see ``ScaleBiOConfig.lr_lambda``).

The bars (L1 distance to p* < 0.05, target loss within 1 % of f*) were calibrated on this problem (seed 0),
over ScaleBiO seeds; each test's docstring gives its spread. Minibatches draw 48 of each source's 64 rows: at
32 rows the minibatch distance reached 0.066 on 1 of 10 seeds (max loss ratio 1.0091), inside the bar. Across
10 other problem seeds the full-batch distance ranged 0.002-0.055 (loss ratio <= 1.0021): p* is flat on some
problems, so the distance bar is this problem's, not every problem's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from solvers.scalebio import ScaleBiOConfig, fit

K, DIM, N_PER_SOURCE, N_TARGET = 3, 5, 64, 64
MINIBATCH = 48  # rows per source (and target rows) per step
SCALE = 40.0
SOURCES = ["a", "b", "c"]


def make_problem(seed: int = 0):
    g = np.random.default_rng(seed)
    base = g.normal(size=DIM)
    thetas = [base + g.normal(size=DIM) for _ in range(K)]
    noise = [0.1, 0.5, 1.0]
    xs = [g.normal(size=(N_PER_SOURCE, DIM)) for _ in range(K)]
    ys = [x @ t + s * g.normal(size=N_PER_SOURCE) for x, t, s in zip(xs, thetas, noise, strict=True)]
    target_theta = sum(q * t for q, t in zip([0.5, 0.3, 0.2], thetas, strict=True))
    xv = g.normal(size=(N_TARGET, DIM))
    yv = xv @ target_theta + g.normal(size=N_TARGET)
    return xs, ys, xv, yv


def lower_solution(p, xs, ys):
    a = sum(pi * x.T @ x / len(x) for pi, x in zip(p, xs, strict=True))
    b = sum(pi * x.T @ y / len(x) for pi, x, y in zip(p, xs, ys, strict=True))
    return np.linalg.solve(a, b)


def target_loss(w, xv, yv) -> float:
    return float(0.5 * np.mean((xv @ w - yv) ** 2))


def bilevel_optimum(xs, ys, xv, yv):
    def objective(p):
        return target_loss(lower_solution(p, xs, ys), xv, yv)

    best = None
    for start in (np.full(K, 1 / K), np.array([0.6, 0.2, 0.2]), np.array([0.2, 0.2, 0.6])):
        res = minimize(objective, start, method="SLSQP", bounds=[(0, 1)] * K,
                       constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}],
                       options={"ftol": 1e-14, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return best.x, best.fun


class ArraySampler:
    """Rows of arrays; ``per_source=None`` returns the full batch every step, else a stratified minibatch."""

    def __init__(self, x, y, source_ids, names, per_source, seed):
        self.x, self.y, self.s = torch.tensor(x), torch.tensor(y), torch.tensor(source_ids)
        self.per_source, self.rng = per_source, np.random.default_rng(seed)
        self.data = SimpleNamespace(sources=names)
        self.groups = [np.flatnonzero(source_ids == k) for k in range(len(names))]

    def next(self):
        if self.per_source is None:
            idx = np.arange(len(self.s))
        else:
            idx = np.concatenate([self.rng.choice(g, self.per_source, replace=False) for g in self.groups])
        return {"x": self.x[idx], "y": self.y[idx], "source_ids": self.s[idx]}

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


def squared_errors(model, batch):
    return 0.5 * (model(batch["x"]).squeeze(-1) - batch["y"]) ** 2


def mean_squared_error(model, batch):
    return squared_errors(model, batch).mean()


@pytest.fixture(scope="module")
def problem():
    xs, ys, xv, yv = make_problem()
    p_star, f_star = bilevel_optimum(xs, ys, xv, yv)
    # The check is only meaningful if the optimum is interior and clearly better than uniform weights.
    assert p_star.min() > 0.1
    assert target_loss(lower_solution(np.full(K, 1 / K), xs, ys), xv, yv) > 1.2 * f_star
    return xs, ys, xv, yv, p_star, f_star


def run_scalebio(problem, per_source, seed, **overrides):
    xs, ys, xv, yv, _, _ = problem
    source_ids = np.repeat(np.arange(K), N_PER_SOURCE)
    train = ArraySampler(SCALE * np.concatenate(xs), np.concatenate(ys), source_ids, SOURCES, per_source, seed)
    val = ArraySampler(SCALE * xv, yv, np.zeros(N_TARGET, dtype=np.int64), ["target"], per_source, seed + 1)
    model = nn.Linear(DIM, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    cfg = ScaleBiOConfig(seed=seed, **overrides)
    result = fit(model, train, val, cfg, per_example_loss_fn=squared_errors,
                 target_loss_fn=mean_squared_error)
    return np.array([result.weights[s] for s in SOURCES])


def assert_near_optimum(problem, p):
    xs, ys, xv, yv, p_star, f_star = problem
    assert np.abs(p - p_star).sum() < 0.05, (p, p_star)
    assert target_loss(lower_solution(p, xs, ys), xv, yv) <= 1.01 * f_star


def test_full_batch_reaches_the_bilevel_optimum(problem):
    """Full batch: the same on every seed (10 seeds: distance 0.0030, loss ratio 1.00002)."""
    assert_near_optimum(problem, run_scalebio(problem, per_source=None, seed=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_reaches_the_bilevel_optimum(problem, seed):
    """Calibrated on 20 seeds (0-19): distance min 0.0046 / median 0.0120 / max 0.0294; loss ratio min 1.00005
    / median 1.00036 / max 1.00268."""
    assert_near_optimum(problem, run_scalebio(problem, per_source=MINIBATCH, seed=seed))


@pytest.mark.parametrize("per_source", [None, MINIBATCH], ids=["full", "minibatch"])
def test_growing_alpha_reaches_the_bilevel_optimum(problem, per_source):
    """Full batch: the same on every seed (distance 0.0007, loss ratio 1.000002). Minibatch, calibrated on 20
    seeds: distance min 0.0081 / median 0.0171 / max 0.0378; loss ratio min 1.00013 / median 1.00078 / max
    1.00408."""
    p = run_scalebio(problem, per_source=per_source, seed=0, tau=2.0, stages=3)
    assert_near_optimum(problem, p)


def test_weights_move_away_from_uniform_only_when_the_upper_level_pulls(problem):
    """Control: with λ frozen (lr_lambda tiny) the weights stay uniform and miss the optimum, so the
    checks above are not satisfied by construction (the same on every seed: distance 0.381 against a bar of
    > 0.2, loss ratio 1.40 against > 1.01)."""
    p = run_scalebio(problem, per_source=None, seed=0, steps=50, lr_lambda=1e-6)
    xs, ys, xv, yv, p_star, f_star = problem
    assert np.abs(p - p_star).sum() > 0.2
    assert target_loss(lower_solution(p, xs, ys), xv, yv) > 1.01 * f_star
