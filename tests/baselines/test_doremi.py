"""DoReMi: Group-DRO domain weights against a reference model."""

import math

import pytest
import torch

from baselines import DoremiConfig
from baselines.doremi import domain_excess, eg_update, weighted_proxy_loss


def test_weight_moves_toward_domains_with_larger_excess(planted, results):
    """Reference fitted on clean target data: clean domains keep a large excess loss and gain weight.

    Calibrated on 16 seeds (0-15) of the whole fixture chain (data, base model, DoReMi), min / median / max:
    - mean excess, noise_000 minus the next domain: 0.044 / 0.085 / 0.160; the next-lowest domain minus
      noise_100: 0.055 / 0.083 / 0.156 (bars > 0);
    - weight, noise_000 minus the next: 0.297 / 0.546 / 0.790; the next-lowest minus noise_100: 0.031 / 0.119 /
      0.168 (bars > 0);
    - w[noise_000] - 1/k: 0.250 / 0.400 / 0.537; 1/k - w[noise_100]: 0.202 / 0.255 / 0.293 (bars > 0);
    - trajectory, noise_000's gain: 0.431 / 0.534 / 0.593; noise_100's loss: 0.261 / 0.285 / 0.330 (bars > 0).
    """
    res = results["doremi"]
    w, excess = res.weights, res.info["mean_excess"]
    k = len(w)
    assert list(w) == list(planted.counts)
    top, bottom = max(excess, key=excess.get), min(excess, key=excess.get)
    assert top == "noise_000" and bottom == "noise_100"
    assert w[top] == max(w.values()) and w[top] > 1 / k
    assert w[bottom] == min(w.values()) and w[bottom] < 1 / k
    first, last = res.trajectory[0]["weights"], res.trajectory[-1]["weights"]
    assert last[top] > first[top] and last[bottom] < first[bottom]


def test_trajectory_matches_eg_update(results):
    """α_t = smooth(softmax(log α_{t-1} + η λ_t)) from α_0 uniform; the output is the time average of α_t."""
    res = results["doremi"]
    names = list(res.trajectory[0]["weights"])
    alpha = torch.full((len(names),), 1 / len(names), dtype=torch.float64)
    total = torch.zeros_like(alpha)
    for rec in res.trajectory:
        lam = torch.tensor([rec["excess"][n] for n in names], dtype=torch.float64)
        alpha = eg_update(alpha, lam, eta=1.0, smoothing=1e-3)
        torch.testing.assert_close(
            alpha, torch.tensor([rec["weights"][n] for n in names], dtype=torch.float64)
        )
        total += alpha
    mean = (total / len(res.trajectory)).tolist()
    assert [res.weights[n] for n in names] == pytest.approx(mean, abs=1e-12)


def test_eg_update_limits():
    a = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    lam = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(
        eg_update(a, lam, eta=2.0, smoothing=1.0), torch.full((3,), 1 / 3, dtype=torch.float64)
    )
    torch.testing.assert_close(eg_update(a, lam, eta=0.0, smoothing=0.0), a)
    new = eg_update(a, lam, eta=1.0, smoothing=0.0)
    assert math.isclose(new.sum().item(), 1.0) and new.argmax().item() == 2


def test_domain_excess_clips_and_keeps_absent_domains():
    nll = torch.tensor([[2.0, 1.0, 0.0], [1.0, 5.0, 0.0]])
    ref = torch.tensor([[1.0, 2.0, 9.0], [0.5, 1.0, 9.0]])
    valid = torch.tensor([[True, True, False], [True, True, False]])
    src = torch.tensor([0, 0])
    prev = torch.tensor([9.0, 7.0])
    got = domain_excess(nll, ref, valid, src, prev)
    # domain 0 tokens: excess max(1,0), max(-1,0), max(.5,0), max(4,0) -> mean 5.5/4; domain 1 absent
    torch.testing.assert_close(got, torch.tensor([5.5 / 4, 7.0]))


def test_proxy_loss_sampling_correction():
    nll = torch.tensor([[1.0, 3.0], [2.0, 0.0], [6.0, 0.0]])
    valid = torch.tensor([[True, True], [True, False], [True, False]])
    src = torch.tensor([0, 1, 1])
    pi = torch.tensor([0.5, 0.5])
    plain = (nll * valid).sum() / valid.sum()
    torch.testing.assert_close(weighted_proxy_loss(nll, valid, src, pi.clone(), pi), plain)
    only_1 = weighted_proxy_loss(nll, valid, src, torch.tensor([0.0, 1.0]), pi)
    torch.testing.assert_close(only_1, torch.tensor(4.0))
    # target 0.5/0.5 but sampled at 0.25/0.75: domain-0 tokens weigh 2, domain-1 tokens 2/3
    got = weighted_proxy_loss(nll, valid, src, torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(got, torch.tensor((2 * 4 + 2 / 3 * 8) / (2 * 2 + 2 / 3 * 2)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reference_data", "val"),
        ("sampling", "natural"),
        ("proxy_steps", 0),
        ("reference_lr", 0.0),
        ("proxy_lr", -1.0),
        ("eta", float("nan")),
        ("smoothing", 1.0),
        ("batch_size", 0),
        ("reference_steps", -2),
    ],
)
def test_doremi_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        DoremiConfig(**{field: value})
