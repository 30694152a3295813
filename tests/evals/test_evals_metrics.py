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


def test_paired_comparison_hand_example():
    method = [0.5, 0.6, 0.7, 0.4]
    base = [0.4, 0.5, 0.5, 0.45]
    # diffs 0.1, 0.1, 0.2, -0.05: mean 0.0875; sum of squared deviations 0.031875 -> std sqrt(0.031875 / 3)
    std = math.sqrt(0.031875 / 3)
    out = M.paired_comparison(method, base, higher_is_better=True)
    assert out["n"] == 4
    assert out["mean_diff"] == pytest.approx(0.0875)
    assert out["std_diff"] == pytest.approx(std)
    assert out["improvement"] == pytest.approx(0.0875)
    assert out["rel_improvement"] == pytest.approx(0.0875 / 0.4625)
    assert (out["wins"], out["losses"], out["ties"]) == (3, 1, 0)
    assert out["t_stat"] == pytest.approx(0.0875 / (std / 2))
    assert out["p_sign"] == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1), X ~ Bin(4, 1/2), two-sided
    assert 0.15 < out["p_t"] < 0.25

    lower = M.paired_comparison(method, base, higher_is_better=False)
    assert lower["improvement"] == pytest.approx(-0.0875)
    assert (lower["wins"], lower["losses"]) == (1, 3)


def test_paired_comparison_edge_cases():
    one = M.paired_comparison([0.5], [0.4])
    assert one["std_diff"] is None and one["t_stat"] is None and one["p_t"] is None and one["p_sign"] == 1.0
    same = M.paired_comparison([0.3, 0.3], [0.3, 0.3])
    assert (same["t_stat"], same["p_t"], same["ties"]) == (0.0, 1.0, 2)
    shift = M.paired_comparison([1.5, 2.5], [1.0, 2.0])
    assert shift["t_stat"] == math.inf and shift["p_t"] == 0.0
    # float-rounding differences are ties, not wins
    assert M.paired_comparison([0.1 + 0.2], [0.3])["ties"] == 1
    with pytest.raises(ValueError):
        M.paired_comparison([1.0, 2.0], [1.0])


def test_sign_test_exact():
    assert M.sign_test(0, 0) == 1.0
    assert M.sign_test(5, 0) == pytest.approx(2 / 32)
    assert M.sign_test(3, 3) == 1.0


@pytest.mark.parametrize("t,df", [(0.5, 2), (2.3, 4), (-3.0, 7), (10.0, 1), (0.01, 30), (50.0, 3),
                                  (1.7, 1.5)])
def test_t_distribution_matches_scipy(t, df):
    stats = pytest.importorskip("scipy.stats")
    assert M.student_t_two_sided(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-15)


def test_paired_tests_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.61, 0.55, 0.70, 0.58, 0.66], [0.60, 0.50, 0.62, 0.59, 0.61]
    out = M.paired_comparison(a, b)
    ref = stats.ttest_rel(a, b)
    assert out["t_stat"] == pytest.approx(ref.statistic)
    assert out["p_t"] == pytest.approx(ref.pvalue)
    assert out["p_sign"] == pytest.approx(stats.binomtest(out["wins"], out["wins"] + out["losses"]).pvalue)
