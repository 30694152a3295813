"""Uniform, proportional and temperature weights (ALGORITHMS.md A.3)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines import TemperatureConfig, run
from baselines.simple import proportional_weights, temperature_weights, uniform_weights

COUNTS = {"big": 9000, "mid": 900, "small": 90, "tiny": 10}


def _l1(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(abs(a[k] - b[k]) for k in a)


def test_uniform_is_one_over_k_in_counts_order():
    w = uniform_weights(COUNTS)
    assert list(w) == list(COUNTS)
    assert all(v == pytest.approx(0.25) for v in w.values())


def test_proportional_is_share_of_examples():
    w = proportional_weights(COUNTS)
    assert w == pytest.approx({k: n / 10000 for k, n in COUNTS.items()})


def test_temperature_default_is_mt5_alpha():
    w = run("temperature", counts=COUNTS).weights
    alpha = 0.3
    raw = {k: n**alpha for k, n in COUNTS.items()}
    assert w == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})


def test_temperature_one_is_proportional_and_large_is_uniform():
    assert temperature_weights(COUNTS, 1.0) == pytest.approx(proportional_weights(COUNTS))
    assert temperature_weights(COUNTS, 1e6) == pytest.approx(uniform_weights(COUNTS), abs=1e-4)


def test_temperature_interpolates_monotonically():
    uni, prop = uniform_weights(COUNTS), proportional_weights(COUNTS)
    ws = [temperature_weights(COUNTS, t) for t in (1.0, 1.5, 2.0, 1 / 0.3, 5.0, 10.0, 100.0)]
    to_uniform = [_l1(w, uni) for w in ws]
    to_prop = [_l1(w, prop) for w in ws]
    assert to_uniform == sorted(to_uniform, reverse=True) and to_uniform[0] > to_uniform[-1]
    assert to_prop == sorted(to_prop) and to_prop[0] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.dictionaries(
        st.text("abcdef", min_size=1, max_size=4), st.integers(0, 10**7), min_size=1, max_size=8
    ).filter(lambda c: sum(c.values()) > 0),
    temperature=st.floats(0.05, 1e4),
)
def test_temperature_on_simplex_and_order_preserving(counts, temperature):
    w = temperature_weights(counts, temperature)
    assert list(w) == list(counts)
    assert math.fsum(w.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(v >= 0 for v in w.values())
    for a in counts:
        if counts[a] == 0:
            assert w[a] == 0.0
        for b in counts:
            if counts[a] > counts[b]:
                assert w[a] >= w[b]


@pytest.mark.parametrize("name", ["uniform", "proportional", "temperature"])
def test_simple_methods_sum_to_one(name):
    res = run(name, counts=COUNTS)
    assert list(res.weights) == list(COUNTS)
    assert math.fsum(res.weights.values()) == pytest.approx(1.0, abs=1e-12)
    assert res.scores is None and res.selected is None and res.trajectory is None


@pytest.mark.parametrize(
    "counts",
    [{}, {"a": -1}, {"a": 1.5}, {"a": True}],
    ids=["empty", "negative", "float", "bool"],
)
def test_bad_counts_raise(counts):
    with pytest.raises(ValueError, match="counts"):
        run("uniform", counts=counts)


def test_all_empty_sources_have_no_size_weights():
    with pytest.raises(ValueError, match="all 0"):
        proportional_weights({"a": 0, "b": 0})
    assert uniform_weights({"a": 0, "b": 0}) == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_config_validation(bad):
    with pytest.raises(ValueError, match="temperature"):
        TemperatureConfig(temperature=bad)
