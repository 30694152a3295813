"""The one best-first ordering of per-example scores, shared by every example-level selector (LESS, RHO).

Selections must be reproducible across runs and machines, so ties are never left to the sort: equal scores
keep row order (the lower row first), and NaN scores rank after every number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def top_k(scores: Sequence[float] | np.ndarray | Any, k: int) -> list[int]:
    """Row indices of the ``k`` highest ``scores``, best first; ties go to the lower index, NaN ranks last.

    Args:
        scores: one score per row: a sequence, a numpy array or a CPU tensor (anything ``np.asarray`` reads);
            compared in float64, so float32 inputs are ranked exactly.
        k: how many rows to keep; more than ``len(scores)`` keeps them all.

    Returns:
        At most ``k`` distinct row indices as Python ints.
    """
    keys = np.asarray(scores, dtype=np.float64).reshape(-1)
    # A stable ascending sort of the negated scores is descending with ties in row order; numpy puts NaN last.
    order = np.argsort(-keys, kind="stable")
    return [int(i) for i in order[: max(0, k)]]
