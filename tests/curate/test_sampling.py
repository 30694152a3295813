"""Allocation properties (hypothesis), the epoch cap and how it is reported, and parsing --max-epochs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import ConfigError, DataError
from curate.sampling import (
    DEFAULT_MAX_EPOCHS,
    allocate,
    check_budget_fits,
    parse_max_epochs,
    plan_allocation,
)


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


def test_weighted_source_without_rows_is_refused():
    with pytest.raises(DataError, match="no training rows"):
        allocate({"a": 0.5, "b": 0.5}, 10, {"a": 5, "b": 0})


@settings(max_examples=300, deadline=None)
@given(problems(), st.floats(0.5, 6.0))
def test_plan_reports_exactly_the_sources_the_cap_cut(p, epochs):
    weights, available, budget = p
    if sum(math.floor(epochs * available[s]) for s, w in weights.items() if w > 0) < budget:
        return
    plan = plan_allocation(weights, budget, available, epochs)
    assert plan.rows == allocate(weights, budget, available, max_epochs=epochs)
    assert plan.wanted == allocate(weights, budget, available)
    for s in weights:
        if s in plan.capped:
            hit = plan.capped[s]
            assert hit.allocated == plan.rows[s] == math.floor(epochs * available[s]) < hit.wanted
            assert hit.cut == hit.wanted - hit.allocated
        else:  # not cut: it has at least what its weight asks for, give or take the rounding of one row
            assert plan.rows[s] >= plan.wanted[s] - 1
    assert bool(plan.warnings()) == bool(plan.capped)


def test_default_cap_is_four_epochs_and_warns_with_numbers():
    assert DEFAULT_MAX_EPOCHS == 4
    plan = plan_allocation({"big": 0.5, "small": 0.5}, 20_000, {"big": 999_000, "small": 1_000})
    assert plan.rows == {"big": 16_000, "small": 4_000} and plan.wanted == {"big": 10_000, "small": 10_000}
    assert plan.capped_dict() == {"small": {"wanted": 10_000, "allocated": 4_000, "available": 1_000,
                                            "cut": 6_000}}
    assert plan.warnings() == [
        "source 'small' hit --max-epochs 4: 4,000 rows (4.00 passes over 1,000) instead of the 10,000 its weight "
        "asks for (cut by 6,000)",
        "the 6,000 rows cut went to the sources with rows left (big +6,000); pass --max-epochs none to repeat rows "
        "without a cap",
    ]
    unlimited = plan_allocation({"big": 0.5, "small": 0.5}, 20_000, {"big": 999_000, "small": 1_000}, None)
    assert unlimited.rows == {"big": 10_000, "small": 10_000} and unlimited.capped == {} and not unlimited.warnings()


def test_a_budget_the_cap_cannot_hold_is_one_line_naming_both_flags():
    with pytest.raises(DataError, match="--max-epochs") as e:
        allocate({"a": 0.5, "b": 0.5}, 100, {"a": 10, "b": 10}, max_epochs=4)
    assert "--budget 100" in str(e.value) and "--max-epochs none" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--budget 81 exceeds what --max-epochs 4 allows"):
        check_budget_fits(81, 20)  # the default cap, before any id is read
    assert check_budget_fits(81, 20, None) == 81  # no cap: up to MAX_PASSES passes


@pytest.mark.parametrize(("text", "want"), [("4", 4.0), ("2.5", 2.5), (" none ", None), ("None", None),
                                            (3, 3.0), (None, None)])
def test_max_epochs_parses_numbers_and_none(text, want):
    assert parse_max_epochs(text) == want


@pytest.mark.parametrize("text", ["abc", "0", "-2", "inf", "nan", "", True])
def test_max_epochs_refuses_anything_else_naming_the_flag(text):
    with pytest.raises(ConfigError, match="--max-epochs") as e:
        parse_max_epochs(text)
    assert "'none'" in str(e.value) and "\n" not in str(e.value)
