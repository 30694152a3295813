"""RHO: excess loss against a reference fitted on the target set."""

import math

import pytest
import torch

from baselines import RhoConfig, run
from baselines.rho import choose, token_topk_scores


def test_rho_ranks_clean_above_corrupted(planted, results, auroc):
    """Calibrated on 16 seeds (0-15) of the whole fixture chain, min / median / max: AUROC 0.987 / 1.000 / 1.000
    (bar >= 0.8); w[noise_000] - w[noise_100] 0.615 / 0.688 / 0.750 (bar > 0). With five sources, 40 rows
    each and 40 target rows (the issue's setup) the AUROC spread was 0.794 / 0.965 / 1.000 on 10 seeds."""
    res = results["rho"]
    value = auroc([s for _, _, s in res.scores], [planted.clean[i] for i, _, _ in res.scores])
    assert value >= 0.8, f"RHO AUROC {value:.3f}"
    assert res.weights["noise_000"] > res.weights["noise_100"]


def test_rho_scores_cover_the_pool_in_row_order(planted, results):
    res = results["rho"]
    assert [i for i, _, _ in res.scores] == planted.train.example_ids
    assert [s for _, s, _ in res.scores] == [planted.train.sources[int(s)] for s in planted.train.source_ids]


def test_choose_top_and_sample():
    scores = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.5, 1.0, 0.0, -2.0, 0.2, 0.3])
    assert choose(scores, RhoConfig(select_fraction=0.3)) == [1, 3, 5]
    cold = RhoConfig(select="sample", select_fraction=0.3, temperature=1e-3, seed=1)
    assert choose(scores, cold) == [1, 3, 5]  # T -> 0: sampling becomes top-k
    hot = RhoConfig(select="sample", select_fraction=0.5, temperature=1e6, seed=1)
    assert choose(scores, hot) == choose(scores, hot)  # seeded
    draws = [
        set(choose(scores, RhoConfig(select="sample", select_fraction=0.5, temperature=1e6, seed=s)))
        for s in range(20)
    ]
    assert len({frozenset(d) for d in draws}) > 5  # T -> inf: close to uniform draws


def test_token_topk_scores_by_hand():
    per_token = [torch.tensor([3.0, -1.0]), torch.tensor([2.0, 1.0, 0.0]), torch.tensor([])]
    # 5 tokens, keep 0.6 -> the 3 largest: 3, 2, 1
    got = token_topk_scores(per_token, keep=0.6)
    torch.testing.assert_close(got, torch.tensor([3.0 / 2, 3.0 / 3, 0.0]))


def test_excess_source_weights_and_heldout_info(planted, base_model):
    """Held-out target loss, base model minus reference, calibrated on 12 seeds: min 0.069 / median 0.227 / max
    0.437 (bar > 0)."""
    cfg = RhoConfig(reference_steps=20, reference_lr=3e-3, reference_fraction=0.5, source_weights="excess")
    res = run("rho", cfg, counts=planted.counts, model=base_model, train=planted.train, target=planted.target)
    mean = {s: sum(sc for _, src, sc in res.scores if src == s) / planted.counts[s] for s in planted.counts}
    clipped = {s: max(v, 0.0) for s, v in mean.items()}
    assert res.weights == pytest.approx({s: v / sum(clipped.values()) for s, v in clipped.items()})
    assert math.isclose(sum(res.weights.values()), 1.0)
    assert res.info["reference_rows"] == len(planted.target) // 2
    assert res.info["heldout_loss_reference"] < res.info["heldout_loss_model"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reference_steps", -1),
        ("reference_lr", 0.0),
        ("reference_fraction", 0.0),
        ("token_keep", 1.5),
        ("select", "best"),
        ("aggregate", "max"),
        ("select_fraction", 2.0),
        ("temperature", -1.0),
        ("batch_size", 0),
        ("source_weights", "none"),
    ],
)
def test_rho_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        RhoConfig(**{field: value})
