"""Stratified sampling over more groups than rows per batch: groups drawn at random, the estimate kept unbiased."""

from __future__ import annotations

import numpy as np
import torch

from solvers.data import SourceSampler, TokenizedSet
from solvers.scalebio.objective import source_means


def _set(k: int, per: int) -> TokenizedSet:
    n = k * per
    return TokenizedSet([[1, 2, 3]] * n, [[-100, 2, 3]] * n, np.repeat(np.arange(k), per), [f"g{i}" for i in range(k)])


def test_each_batch_takes_one_row_from_distinct_random_groups():
    sampler = SourceSampler(_set(50, 4), batch_size=8, seed=0)
    assert sampler.samples_groups and sampler.group_scale == 50 / 8
    seen = np.zeros(50)
    for _ in range(2000):
        batch = sampler.next()
        groups = batch["source_ids"].tolist()
        assert len(groups) == 8 == len(set(groups))
        assert float(batch["group_scale"]) == 50 / 8
        seen[groups] += 1
    share = seen / 2000  # each group is in a batch with probability 8 / 50 = 0.16 (binomial sd 0.008)
    assert share.min() > 0.12 and share.max() < 0.20


def test_scaled_group_sums_are_unbiased():
    k, per = 40, 3
    data = _set(k, per)
    rng = np.random.default_rng(1)
    loss = torch.as_tensor(rng.uniform(0.5, 3.0, k * per))  # a fixed loss per row
    p = torch.as_tensor(rng.dirichlet(np.ones(k)))
    full = float(p @ source_means(loss, torch.as_tensor(data.source_ids), k))
    sampler = SourceSampler(data, batch_size=6, seed=2)
    estimates = []
    for _ in range(6000):
        idx = sampler.next_indices()
        ids = torch.as_tensor(data.source_ids[idx])
        estimates.append(sampler.group_scale * float(p @ source_means(loss[idx], ids, k)))
    assert abs(np.mean(estimates) - full) / full < 0.03
    unscaled = np.mean(estimates) / sampler.group_scale  # what leaving absent groups at 0 would give
    assert unscaled < 0.2 * full


def test_no_group_sampling_when_every_source_fits_in_a_batch():
    sampler = SourceSampler(_set(4, 5), batch_size=8, seed=0)
    assert not sampler.samples_groups and sampler.group_scale == 1.0
    assert "group_scale" not in sampler.next()
