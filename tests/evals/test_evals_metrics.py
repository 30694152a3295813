import math

import pytest

from evals import metrics as M


def test_perplexity():
    assert M.perplexity(0.0) == 1.0
    assert M.perplexity(math.log(4.0)) == pytest.approx(4.0)
    assert M.perplexity(1e6) == math.inf
    assert math.isnan(M.perplexity(float("nan")))


def test_mean_by_source_weighted_unweighted_and_missing_source():
    values, src = [1.0, 3.0, 10.0], [0, 0, 2]
    assert M.mean_by_source(values, src, ["a", "b", "c"]) == {"a": 2.0, "c": 10.0}
    # token-weighted: (1*1 + 3*3) / 4
    assert M.mean_by_source(values, src, ["a", "b", "c"], counts=[1, 3, 2]) == {"a": 2.5, "c": 10.0}
    with pytest.raises(ValueError):
        M.mean_by_source([1.0], [0, 1], ["a", "b"])


def test_entropy_and_effective_sources():
    u = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert M.weight_entropy(u) == pytest.approx(math.log(4))
    assert M.effective_sources(u) == pytest.approx(4.0)
    assert M.weight_entropy({"a": 1.0, "b": 0.0}) == 0.0
    assert M.effective_sources({"a": 0.5, "b": 0.5, "c": 0.0}) == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [{}, {"a": -0.1, "b": 1.1}, {"a": float("nan")}, {"a": 0.0, "b": 0.0}])
def test_invalid_weights_rejected(bad):
    with pytest.raises(ValueError):
        M.weight_entropy(bad)


def test_distances_by_name_not_position():
    p = {"a": 0.5, "b": 0.5}
    q = {"b": 0.0, "a": 1.0}  # different key order on purpose
    assert M.l1_distance(p, q) == pytest.approx(1.0)
    assert M.total_variation(p, q) == pytest.approx(0.5)
    assert M.kl_divergence(q, p) == pytest.approx(math.log(2))
    assert M.kl_divergence(p, q) == math.inf
    assert M.kl_divergence(p, p) == 0.0
    with pytest.raises(ValueError, match="different sources"):
        M.total_variation(p, {"a": 0.5, "c": 0.5})


def test_uniform_weights():
    assert M.uniform_weights(["x", "y"]) == {"x": 0.5, "y": 0.5}


def test_mean_std():
    assert M.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert M.mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        M.mean_std([])
