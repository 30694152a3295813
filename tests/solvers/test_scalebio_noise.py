"""Planted noise: ScaleBiO must down-weight sources whose answers are corrupted (ALGORITHMS.md §4.1, §7).
 Five sources of two-term addition problems whose answers are replaced by "." with probability 0, .25, .5, .75
and 1; the target set is clean. A 0.1M-parameter Llama trained from scratch on CPU, stratified 8 rows per
source, and ``ScaleBiOConfig``'s defaults unchanged (300 steps, α = 10, the default step sizes), the same
defaults the convex test runs with.

Calibration: ``run(seed)`` for seeds 0-9 (data, init and ScaleBiO seed all follow ``seed``), one torch thread.
The weakest check is the order among the two noisiest sources: both are pushed out to 1-3 % and then barely
move (λ's gradient scales with p), so their order is close to a tie. Tried as a larger gap, four sources (0, 25,
50, 100 %) widened that margin to >= 0.0046 but one seed in 10 (seed 7) then failed outright (weights went back
towards uniform after step 150), so the five-source design stays, with its margin stated below.
"""

from __future__ import annotations

import pytest

from solvers.data import tokenize_rows
from solvers.lm import tiny_llama
from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

NOISE = [0.0, 0.25, 0.5, 0.75, 1.0]
NAMES = [f"noise_{int(rate * 100)}" for rate in NOISE]
COLLAPSED = 0.02  # below this a source is effectively dropped; ties among dropped sources are noise


def run(seed, tokenizer, arithmetic_rows, target_response=None):
    prompts, responses, source_ids = [], [], []
    for k, rate in enumerate(NOISE):
        p, r = arithmetic_rows(200, seed=100 * seed + k, noise=rate)
        prompts += p
        responses += r
        source_ids += [k] * len(p)
    vp, vr = arithmetic_rows(64, seed=100 * seed + 99)
    if target_response is not None:
        vr = [target_response] * len(vr)
    train = tokenize_rows(tokenizer, prompts, responses, source_ids, NAMES, 32, template="plain")
    val = tokenize_rows(tokenizer, vp, vr, [0] * len(vp), ["target"], 32, template="plain")
    cfg = ScaleBiOConfig(batch_size=8 * len(NOISE), val_batch_size=32, seed=seed)
    model = tiny_llama(len(tokenizer), hidden=48, layers=2, heads=2, max_len=32, seed=seed)
    result = fit(model, *make_samplers(train, val, cfg), cfg)
    return [result.weights[n] for n in NAMES], result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_fall_with_the_noise_rate(seed, arithmetic_tokenizer, arithmetic_rows):
    """Calibrated on 10 seeds (0-9), min / median / max:
    - clean source's lead over the next, p[0] - max(p[1:]): 0.411 / 0.708 / 0.868 (bar > 0);
    - fully corrupted source's weight p[-1]: 0.0092 / 0.0145 / 0.0251 (bar < 0.1);
    - monotonicity slack, min over pairs of max(p[i], 0.02) + 1e-3 - p[j]: 0.0021 / 0.0064 / 0.0118 (bar >= 0;
      always the 75 % / 100 % pair, see the module docstring);
    - target-loss drop from the first step to the last: 4.21 / 4.51 / 4.61 (bar > 0).
    """
    p, result = run(seed, arithmetic_tokenizer, arithmetic_rows)
    assert max(range(len(p)), key=p.__getitem__) == 0, p  # the clean source wins
    assert p[-1] < 1 / (2 * len(p)), p  # the fully corrupted source is pushed out
    for i in range(len(p)):
        for j in range(i + 1, len(p)):  # a noisier source never gains weight, except among dropped sources
            assert p[j] <= max(p[i], COLLAPSED) + 1e-3, (i, j, p)
    assert result.trajectory[-1]["target_loss"] < result.trajectory[0]["target_loss"]


def test_a_corrupted_target_reverses_the_ranking(arithmetic_tokenizer, arithmetic_rows):
    """Control: if the target itself answers ".", the fully corrupted source must win instead.

    Calibrated on 10 seeds (0-9), min / median / max: the corrupted source's lead p[-1] - max(p[:-1]) 0.232 /
    0.554 / 0.737 (bar > 0); the clean source's weight p[0] 0.0175 / 0.0247 / 0.0306 (bar < 0.2).
    """
    p, _ = run(0, arithmetic_tokenizer, arithmetic_rows, target_response=".")
    assert max(range(len(p)), key=p.__getitem__) == len(p) - 1, p
    assert p[0] < 1 / len(p), p
