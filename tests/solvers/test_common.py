"""solvers.common: one normaliser with an explicit all-zero policy, and one deterministic top-k."""

import math

import numpy as np
import pytest

from solvers.common import normalise, top_k


def test_normalise_keeps_order_and_sums_to_one():
    out = normalise({"b": 1, "a": 3}, when_zero="raise")
    assert list(out) == ["b", "a"] and out == {"b": 0.25, "a": 0.75}
    assert all(type(v) is float for v in out.values())


def test_normalise_all_zero_follows_the_policy():
    assert normalise({"a": 0.0, "b": 0.0}, when_zero="uniform") == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="sum to 0"):
        normalise({"a": 0.0}, when_zero="raise")


@pytest.mark.parametrize("bad", [{}, {"a": -1.0}, {"a": math.nan}, {"a": math.inf}])
def test_normalise_rejects_bad_weights_under_both_policies(bad):
    for policy in ("raise", "uniform"):
        with pytest.raises(ValueError):
            normalise(bad, when_zero=policy)


def test_normalise_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="when_zero"):
        normalise({"a": 1.0}, when_zero="proportional")  # type: ignore[arg-type]


def test_top_k_is_best_first_with_ties_in_row_order():
    scores = [0.5, 2.0, 0.5, -1.0, 2.0, 0.0, -0.0]
    assert top_k(scores, 4) == [1, 4, 0, 2]
    assert top_k(scores, 100) == [1, 4, 0, 2, 5, 6, 3]
    assert top_k(scores, 0) == []
    # the order LESS and RHO produced before they shared this function
    assert top_k(scores, 7) == sorted(range(7), key=lambda i: (-scores[i], i))


def test_top_k_ranks_nan_last_and_reads_float32_exactly():
    assert top_k([math.nan, 1.0, math.nan, 0.0], 4) == [1, 3, 0, 2]
    close = np.array([1.0000001, 1.0], dtype=np.float32)
    assert top_k(close, 1) == [0]
