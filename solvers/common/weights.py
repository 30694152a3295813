"""Per-source weights onto the simplex: one normaliser, so every layer agrees on what a valid mixture is.

The callers differ only on an all-zero vector, and that difference is a real decision rather than drift, so
it is an explicit argument: a baseline whose selection or excess is zero everywhere has no preference, which
is the uniform mixture (``when_zero="uniform"``), while a weights file or a report comparing mixtures must not
invent one (``"raise"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

WhenZero = Literal["raise", "uniform"]


def normalise(weights: Mapping[str, float], *, when_zero: WhenZero) -> dict[str, float]:
    """``weights / sum(weights)`` in the same key order, summed with ``math.fsum`` so rounding never fails a
    sum-to-one check downstream.

    Args:
        weights: non-negative, finite weight per source name.
        when_zero: what an all-zero vector means: ``"uniform"`` gives ``1/K`` each, ``"raise"`` refuses it.

    Returns:
        A new dict of Python floats summing to 1.

    Raises:
        ValueError: ``weights`` is empty, a weight is negative or not finite, or all are zero with
            ``when_zero="raise"``.
    """
    if when_zero not in ("raise", "uniform"):
        raise ValueError(f"when_zero must be 'raise' or 'uniform', got {when_zero!r}")
    if not weights:
        raise ValueError("weights are empty; at least one source is needed")
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of source {name!r} is {w!r}; weights must be finite and >= 0")
    total = math.fsum(weights.values())
    if total > 0:
        return {name: float(w) / total for name, w in weights.items()}
    if when_zero == "raise":
        raise ValueError("weights sum to 0; at least one source needs a positive weight")
    return {name: 1.0 / len(weights) for name in weights}
