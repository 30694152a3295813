"""Allocation properties (hypothesis) and the deterministic draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import DataError
from curate.sampling import allocate, draw


@st.composite
def problems(draw_, capped: bool = False):
    k = draw_(st.integers(1, 8))
    raw = draw_(st.lists(st.floats(0, 1, allow_nan=False), min_size=k, max_size=k).filter(lambda w: sum(w) > 1e-3))
    names = [f"s{i}" for i in range(k)]
    weights = {n: w / sum(raw) for n, w in zip(names, raw, strict=True)}
    available = {n: draw_(st.integers(1, 500)) for n in names}
    budget = draw_(st.integers(0, 3000))
    return weights, available, budget


@settings(max_examples=300, deadline=None)
@given(problems())
def test_uncapped_sums_to_budget_and_is_within_one_of_exact_share(p):
    weights, available, budget = p
    alloc = allocate(weights, budget, available)
    assert sum(alloc.values()) == budget
    for s, w in weights.items():
        assert abs(alloc[s] - budget * w) < 1 + 1e-9
        assert alloc[s] >= 0


@settings(max_examples=300, deadline=None)
@given(problems())
def test_monotone_in_weight(p):
    weights, available, budget = p
    alloc = allocate(weights, budget, available)
    for a in weights:
        for b in weights:
            if weights[a] > weights[b]:
                assert alloc[a] >= alloc[b]


@settings(max_examples=300, deadline=None)
@given(problems(), st.floats(0.5, 3.0))
def test_capped_never_exceeds_availability(p, epochs):
    weights, available, budget = p
    cap_total = sum(math.floor(epochs * available[s]) for s, w in weights.items() if w > 0)
    if cap_total < budget:
        with pytest.raises(DataError, match="--max-epochs"):
            allocate(weights, budget, available, max_epochs=epochs)
        return
    alloc = allocate(weights, budget, available, max_epochs=epochs)
    assert sum(alloc.values()) == budget
    for s in weights:
        assert alloc[s] <= math.floor(epochs * available[s])
        if weights[s] == 0:
            assert alloc[s] == 0


def test_cap_redistributes_in_proportion():
    alloc = allocate({"a": 0.5, "b": 0.25, "c": 0.25}, 100, {"a": 10, "b": 100, "c": 100}, max_epochs=1)
    assert alloc == {"a": 10, "b": 45, "c": 45}


def test_draw_whole_passes_plus_remainder_and_determinism():
    ids = {"a": [f"a{i}" for i in range(4)], "b": [f"b{i}" for i in range(10)]}
    alloc = {"a": 10, "b": 3}
    src, ex, dr = draw(ids, alloc, seed=7)
    rows_a = [(e, d) for s, e, d in zip(src, ex, dr, strict=True) if s == "a"]
    assert sorted(d for _, d in rows_a) == [0] * 4 + [1] * 4 + [2] * 2
    for p in (0, 1):  # each whole pass uses every row exactly once
        assert sorted(e for e, d in rows_a if d == p) == ids["a"]
    assert len({e for s, e in zip(src, ex, strict=True) if s == "b"}) == 3
    again = draw(ids, alloc, seed=7)
    assert (again[0], again[1], again[2].tolist()) == (src, ex, dr.tolist())
    assert draw(ids, alloc, seed=8)[1] != ex


def test_draw_with_scores_takes_the_best_first():
    ids = {"a": ["x", "y", "z"]}
    _, ex, _ = draw(ids, {"a": 2}, seed=0, scores={"a": np.array([0.1, 0.9, 0.5])})
    assert sorted(ex) == ["y", "z"]


def test_weighted_source_without_rows_is_refused():
    with pytest.raises(DataError, match="no training rows"):
        allocate({"a": 0.5, "b": 0.5}, 10, {"a": 5, "b": 0})
