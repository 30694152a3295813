"""Pure metrics for comparing data-selection methods: losses, weight vectors, and seeds.

Everything here takes plain Python numbers or ``dict[str, float]`` weights and returns plain numbers, so the
report, the CLI and a user's notebook compute the same thing. Weight dicts are matched by source name, never
by position: two dicts with different keys are an error, not a silent misalignment. Significance tests are
implemented here (exact sign test, paired t-test via the regularised incomplete beta function) so that the
base install needs no scipy; the tests check them against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from solvers.common import normalise

# math.exp overflows above ~709.78; a loss that large means the model is broken, and inf says so honestly.
_MAX_EXP_ARG = 700.0


def perplexity(loss: float) -> float:
    """``exp(loss)`` for a mean token NLL in nats; ``inf`` when that would overflow, ``nan`` for ``nan``."""
    if math.isnan(loss):
        return math.nan
    return math.exp(loss) if loss < _MAX_EXP_ARG else math.inf


def mean_by_source(values: Sequence[float], source_ids: Sequence[int], sources: Sequence[str],
                   counts: Sequence[float] | None = None) -> dict[str, float]:
    """Mean of ``values`` within each source, optionally weighted by ``counts`` (e.g. tokens per example).

    Weighting per-example token means by their token counts gives the per-source token mean; unweighted gives
    the per-source mean of per-example means (ALGORITHMS.md §1.7's ℓ̄_i). Sources with no rows (or zero total
    weight) are left out rather than reported as 0 or NaN.
    """
    if not len(values) == len(source_ids) == (len(counts) if counts is not None else len(values)):
        raise ValueError("mean_by_source: values, source_ids and counts must have the same length")
    totals = [0.0] * len(sources)
    norms = [0.0] * len(sources)
    for i, (value, src) in enumerate(zip(values, source_ids, strict=True)):
        w = 1.0 if counts is None else float(counts[i])
        totals[src] += w * float(value)
        norms[src] += w
    return {name: totals[k] / norms[k] for k, name in enumerate(sources) if norms[k] > 0}


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights rescaled to sum to 1; a mixture compared in a report is never invented, so an empty or all-zero
    vector is a ``ValueError`` (:func:`solvers.common.normalise` with ``when_zero="raise"``)."""
    return normalise(weights, when_zero="raise")


def weight_entropy(weights: Mapping[str, float]) -> float:
    """Shannon entropy of the (normalised) weights in nats: 0 for one source, ``log K`` for uniform."""
    p = normalise_weights(weights)
    return -math.fsum(w * math.log(w) for w in p.values() if w > 0)


def effective_sources(weights: Mapping[str, float]) -> float:
    """``exp(entropy)``: how many equally weighted sources the mixture is worth (1 to K)."""
    return math.exp(weight_entropy(weights))


def uniform_weights(sources: Sequence[str]) -> dict[str, float]:
    """``1/K`` on every source: the reference every learned mixture is measured against."""
    if not sources:
        raise ValueError("no sources")
    return {s: 1.0 / len(sources) for s in sources}


def l1_distance(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Sum of absolute differences between two normalised weight dicts over the same sources (0 to 2)."""
    a, b = _aligned(p, q)
    return math.fsum(abs(a[k] - b[k]) for k in a)


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Total-variation distance, half the L1 distance (0 to 1): the most mass the two disagree on."""
    return 0.5 * l1_distance(p, q)


def kl_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """KL(p || q) in nats; ``inf`` when p puts mass on a source that q gives exactly 0."""
    a, b = _aligned(p, q)
    total = 0.0
    for k, pk in a.items():
        if pk == 0:
            continue
        if b[k] == 0:
            return math.inf
        total += pk * math.log(pk / b[k])
    return max(0.0, total)


def _aligned(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    if set(p) != set(q):
        raise ValueError(f"weight dicts name different sources: {sorted(set(p) ^ set(q))}")
    return normalise_weights(p), normalise_weights(q)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1 denominator; 0 for a single value) of seed-level results."""
    if not values:
        raise ValueError("mean_std: no values")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def paired_comparison(method: Sequence[float], baseline: Sequence[float],
                      higher_is_better: bool = True) -> dict[str, float | int | None]:
    """Compare a method to a baseline run on the same seeds, pairing value ``i`` with value ``i``.

    Pairing removes the seed-to-seed variance the two runs share (same data order, same init), which an
    unpaired comparison of two means would count as noise. Two tests are given because with 3-5 seeds neither
    is convincing alone: the exact two-sided sign test (no distributional assumption, ties dropped) and the
    two-sided paired t-test (assumes roughly normal differences).

    Args:
        method: The method's metric, one value per seed.
        baseline: The baseline's metric on the same seeds, in the same order.
        higher_is_better: Direction of the metric (False for losses and perplexity).

    Returns:
        ``n``; ``mean_diff`` and ``std_diff`` of ``method - baseline`` (raw, sample std, None when n < 2);
        Differences within float rounding (``math.isclose``, rel 1e-9) count as 0.
        ``improvement``, the mean difference signed so that > 0 means the method is better;
        ``rel_improvement`` relative to the baseline mean (None when that is 0); ``wins``/``losses``/``ties``
        per seed; ``t_stat``/``p_t`` of the paired t-test (None when n < 2 or undefined); ``p_sign`` of the
        sign test.
    """
    if len(method) != len(baseline):
        raise ValueError(f"paired_comparison: {len(method)} method values vs {len(baseline)} baseline values")
    if not method:
        raise ValueError("paired_comparison: no paired values")
    sign = 1.0 if higher_is_better else -1.0
    # Differences at float-rounding level are ties, not wins: two methods that trained on identical mixtures
    # can still differ in the last bit after summation in a different order.
    diffs = [0.0 if math.isclose(m, b, rel_tol=1e-9, abs_tol=1e-12) else float(m) - float(b)
             for m, b in zip(method, baseline, strict=True)]
    n = len(diffs)
    mean_diff, std_diff = mean_std(diffs)
    base_mean = math.fsum(baseline) / n
    wins = sum(1 for d in diffs if sign * d > 0)
    losses = sum(1 for d in diffs if sign * d < 0)
    t_stat, p_t = paired_t_test(diffs)
    return {
        "n": n,
        "mean_diff": mean_diff,
        "std_diff": std_diff if n > 1 else None,
        "improvement": sign * mean_diff,
        "rel_improvement": sign * mean_diff / abs(base_mean) if base_mean != 0 else None,
        "wins": wins,
        "losses": losses,
        "ties": n - wins - losses,
        "t_stat": t_stat,
        "p_t": p_t,
        "p_sign": sign_test(wins, losses),
    }


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign-test p-value of ``wins`` vs ``losses`` (ties dropped); 1.0 if none."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_t_test(diffs: Sequence[float]) -> tuple[float | None, float | None]:
    """Two-sided one-sample t-test of ``mean(diffs) == 0``, as ``(t, p)``.

    Returns ``(None, None)`` for fewer than two values. With zero spread the statistic degenerates: all-zero
    differences give ``(0.0, 1.0)`` and identical non-zero ones give ``(±inf, 0.0)``.
    """
    n = len(diffs)
    if n < 2:
        return None, None
    mean, std = mean_std(diffs)
    if std == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (std / math.sqrt(n))
    return t, student_t_two_sided(t, n - 1)


def student_t_two_sided(t: float, df: float) -> float:
    """Two-sided tail probability ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError("df must be > 0")
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by the continued fraction (Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast only for x < (a+1)/(a+b+2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
    # otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def _beta_cf(a: float, b: float, x: float, max_iter: int = 300, eps: float = 1e-15) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
