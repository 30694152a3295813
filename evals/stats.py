"""Paired statistics for "is method A better than method B on the target", over test examples and seeds.

Every compare arm is evaluated on the same test rows under the same seeds, so the natural unit is the paired
difference ``d[s, i] = a[s, i] - b[s, i]`` of one example ``i`` under one seed ``s``. Two sources of noise sit in
it: which test examples happened to be drawn (hundreds of them, most of the statistical power) and which training
seed was run (1-5 of them, where a tiny model's accuracy jumps). :func:`paired_difference` resamples both: a
percentile bootstrap (``scipy.stats.bootstrap``) over test examples, and inside every replicate the seeds are
drawn with replacement too, so a difference that only one lucky seed shows gets the wide interval it deserves.
With one seed the interval covers example noise only, and the result says so (``seed_noise: False``).

Two classical tests come with it, from ``scipy.stats``: the Wilcoxon signed-rank test on the seed-averaged
per-example differences, and the paired t-test (``ttest_rel``) on the per-seed means when there are 2+ seeds.

Usage::

    out = paired_difference(acc_a, acc_b, higher_is_better=True)   # arrays shaped (seeds, examples)
    out["ci"], out["p"], out["half_width"]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


def paired_difference(a: Any, b: Any, *, higher_is_better: bool = True, n_resamples: int = N_RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Mean of ``a - b`` with a bootstrap confidence interval and p-values, pairing seed ``s`` and example ``i``.

    Args:
        a: The method's values, shaped ``(seeds, examples)`` (a 1-D array is one value per seed, e.g. a
            benchmark score with no per-example values).
        b: The other method's values on the same seeds and examples, same shape.
        higher_is_better: Direction of the metric; ``improvement`` is signed so that > 0 means ``a`` is better.
        n_resamples: Bootstrap replicates.
        confidence: Confidence level of ``ci``.
        seed: Seeds the bootstrap, so a report is reproducible.

    Returns:
        ``{"mean_diff", "improvement", "higher_is_better", "ci": [low, high] (of a - b), "half_width", "p",
        "p_wilcoxon", "p_ttest", "n_seeds", "n_examples", "seed_noise", "seeds_better", "seeds_worse"}``. ``p`` is the
        bootstrap's two-sided p-value (twice the share of replicates on the far side of 0), so ``p < 0.05``
        exactly when the 95% interval excludes 0 (up to resampling noise). ``ci``, ``half_width`` and ``p`` are
        None when nothing can be resampled (one seed and no per-example values); ``p_ttest`` needs 2+ seeds and
        ``p_wilcoxon`` per-example values.
    """
    d = _differences(a, b)
    n_seeds, n_examples = d.shape
    mean = float(d.mean())
    sign = 1.0 if higher_is_better else -1.0
    per_seed = d.mean(axis=1)
    out: dict[str, Any] = {
        "mean_diff": mean, "improvement": sign * mean, "higher_is_better": higher_is_better,
        "n_seeds": n_seeds, "n_examples": n_examples,
        "seed_noise": n_seeds > 1, "seeds_better": int((sign * per_seed > 0).sum()),
        "seeds_worse": int((sign * per_seed < 0).sum()), "p_wilcoxon": _wilcoxon(d), "p_ttest": _ttest(d),
        "ci": None, "half_width": None, "p": None,
    }
    replicates = _bootstrap(d, n_resamples, confidence, seed)
    if replicates is not None:
        low, high, dist = replicates
        out.update(ci=[low, high], half_width=(high - low) / 2, p=_two_sided_p(dist))
    return out


def _differences(a: Any, b: Any) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0 or x.ndim not in (1, 2):
        raise ValueError(f"paired_difference: need two equal, non-empty (seeds, examples) arrays, got {x.shape} "
                         f"and {y.shape}")
    d = x - y
    if not np.isfinite(d).all():
        raise ValueError("paired_difference: values must be finite")
    return d[:, None] if d.ndim == 1 else d


def _bootstrap(d: np.ndarray, n_resamples: int, confidence: float,
               seed: int) -> tuple[float, float, np.ndarray] | None:
    """Percentile bootstrap of the mean: examples through scipy, seeds redrawn inside each replicate."""
    from scipy import stats

    n_seeds, n_examples = d.shape
    rng = np.random.default_rng(seed)
    if n_examples >= 2:
        def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            rows = np.atleast_2d(idx).astype(np.intp)  # (replicates, examples): resampled example indices
            seeds = rng.integers(n_seeds, size=(rows.shape[0], n_seeds))
            by_example = d[seeds].mean(axis=1)  # (replicates, examples): the drawn seeds' mean per example
            out = np.take_along_axis(by_example, rows, axis=1).mean(axis=1)
            return out if np.ndim(idx) > 1 else out[0]

        data: tuple[np.ndarray, ...] = (np.arange(n_examples, dtype=np.float64),)
    elif n_seeds >= 2:
        def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:  # the values themselves, one per seed
            return np.asarray(idx).mean(axis=axis)

        data = (d[:, 0],)
    else:
        return None
    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", vectorized=True, batch=min(n_resamples, 500), random_state=rng)
    dist = np.asarray(res.bootstrap_distribution)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # every replicate equal: no spread at all
        low = high = float(dist.mean())
    return low, high, dist


def _two_sided_p(dist: np.ndarray) -> float:
    below, above = float((dist <= 0).mean()), float((dist >= 0).mean())
    return min(1.0, 2.0 * min(below, above))


def _wilcoxon(d: np.ndarray) -> float | None:
    from scipy import stats

    per_example = d.mean(axis=0)
    if per_example.size < 2 or not np.any(per_example != 0):
        return None if per_example.size < 2 else 1.0
    return float(stats.wilcoxon(per_example, zero_method="zsplit").pvalue)


def _ttest(d: np.ndarray) -> float | None:
    from scipy import stats

    per_seed = d.mean(axis=1)
    if per_seed.size < 2:
        return None
    if np.all(per_seed == per_seed[0]):
        return 1.0 if per_seed[0] == 0 else 0.0
    return float(stats.ttest_rel(per_seed, np.zeros_like(per_seed)).pvalue)
