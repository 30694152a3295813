"""Pure metrics for comparing data-selection methods: losses, weight vectors, and seeds.

Everything here takes plain Python numbers or ``dict[str, float]`` weights and returns plain numbers, so the
report, the CLI and a user's notebook compute the same thing. Weight dicts are matched by source name, never
by position: two dicts with different keys are an error, not a silent misalignment. Paired significance
(bootstrap intervals, Wilcoxon, t-test) lives in ``evals.stats``, on top of ``scipy.stats``.
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
