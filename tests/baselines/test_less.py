"""LESS: batched per-example gradients, warmup checkpoints, influence scores on planted noise."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from baselines.base import n_selected
from baselines.less import (
    LessConfig,
    _lr_at,
    adam_direction,
    add_lora,
    influence_scores,
    lora_params,
    lora_target_modules,
    per_example_grads,
    per_example_grads_loop,
    warmup,
)
from baselines.scoring import subset


def test_less_ranks_clean_above_corrupted(planted, results, auroc):
    """Calibrated on 16 seeds (0-15) of the whole fixture chain: AUROC min 0.860 / median 0.972 / max 0.999 (bar
    >= 0.8). With the default 32 warmup rows it was 0.712 / 0.924 / 0.997, 3 seeds under the bar."""
    res = results["less"]
    ids = [i for i, _, _ in res.scores]
    value = auroc([s for _, _, s in res.scores], [planted.clean[i] for i in ids])
    assert value >= 0.8, f"LESS AUROC {value:.3f}"


def test_less_selection_is_top_scores_and_weights_follow_it(planted, results):
    """w[noise_000] - w[noise_100], calibrated on 16 seeds: min 0.615 / median 0.662 / max 0.740 (bar > 0)."""
    res = results["less"]
    k = n_selected(len(planted.train), 0.2)
    assert len(res.selected) == k == len(set(res.selected))
    by_score = sorted(res.scores, key=lambda r: -r[2])
    assert set(res.selected) == {i for i, _, _ in by_score[:k]}
    source_of = {i: s for i, s, _ in res.scores}
    shares = {s: sum(source_of[i] == s for i in res.selected) / k for s in planted.counts}
    assert res.weights == pytest.approx(shares)
    assert res.weights["noise_000"] > res.weights["noise_100"]


def test_target_modules_found_generically(base_model):
    assert lora_target_modules(base_model) == ["k_proj", "o_proj", "q_proj", "v_proj"]


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def lora_model(base_model, request, seeded):
    with seeded(0):
        model = add_lora(base_model, LessConfig(lora_r=2, lora_dropout=0.0, target_modules=("q_proj", "v_proj")))
    model.config._attn_implementation = request.param  # HF checkpoints usually load with sdpa
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA B starts at 0, which would make every A-gradient trivially 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def mixed_rows(planted) -> list[int]:
    """Two clean rows, then a "." and a 3-digit answer from the fully corrupted source: different lengths."""
    n = planted.counts["noise_000"]
    last = len(planted.train) - planted.counts["noise_100"]  # noise_100's rows: even j ".", odd j 3-digit
    return [0, 1, n + 5, last, last + 1, last + 3]


def test_vmap_grads_equal_python_loop(planted, lora_model):
    rows = mixed_rows(planted)
    batch = planted.train.batch(rows)
    assert (batch["attention_mask"] == 0).any()
    params = lora_params(lora_model)
    fast = per_example_grads(lora_model, params, batch)
    slow = per_example_grads_loop(lora_model, params, batch)
    assert fast.shape == (len(rows), sum(p.numel() for p in params.values()))
    assert fast.abs().max() > 1e-3
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_vmap_grads_reject_left_padding(planted, lora_model):
    batch = planted.train.batch([0, mixed_rows(planted)[-1]])  # a clean row and a longer 3-digit one
    batch = {k: v.flip(1) if k != "source_ids" else v for k, v in batch.items()}
    with pytest.raises(ValueError, match="right-padded"):
        per_example_grads(lora_model, lora_params(lora_model), batch)


def test_adam_direction_formula():
    g, m, v = torch.tensor([[1.0, -2.0]]), torch.tensor([0.5, 0.1]), torch.tensor([0.2, 0.3])
    got = adam_direction(g, m, v, (0.9, 0.999), 1e-8)
    m2 = 0.9 * m + 0.1 * g
    v2 = 0.999 * v + 0.001 * g**2
    torch.testing.assert_close(got, m2 / torch.sqrt(v2 + 1e-8))


def test_lr_schedule_is_linear_warmup_then_decay():
    lrs = [_lr_at(s, 100, 3) for s in range(100)]
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[3] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1 / 97)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))


def test_warmup_checkpoints_hold_named_adam_state(planted, base_model, tmp_path):
    cfg = LessConfig(lr=1e-2, warmup_epochs=2, warmup_batch_size=8, lora_r=2, checkpoint_dir=str(tmp_path))
    model = add_lora(base_model, cfg)
    data = subset(planted.train, range(0, len(planted.train), len(planted.train) // 20))  # 20 rows -> 3 steps/epoch
    records = []
    ckpts = warmup(model, data, cfg, on_step=records.append)
    names = list(lora_params(model))
    assert len(ckpts) == 2 and len(records) == 6
    assert {r["stage"] for r in records} == {"less_warmup"}
    for i, c in enumerate(ckpts):
        assert list(c.exp_avg) == list(c.exp_avg_sq) == list(c.lora) == names
        assert all(c.exp_avg_sq[n].min() >= 0 and c.exp_avg_sq[n].max() > 0 for n in names)
        assert c.mean_lr == pytest.approx(np.mean([r["lr"] for r in records[3 * i : 3 * i + 3]]))
        saved = torch.load(tmp_path / f"less_epoch{i}.pt")
        torch.testing.assert_close(saved["exp_avg"], c.exp_avg)
    assert ckpts[0].mean_lr > ckpts[1].mean_lr
    assert not torch.equal(ckpts[0].lora[names[-1]], ckpts[1].lora[names[-1]])


def test_task_max_is_max_over_single_task_scores(planted, base_model):
    """tasks='by_source' scores equal the element-wise max of scoring against each task alone."""
    cfg = LessConfig(lr=1e-2, warmup_epochs=2, lora_r=2, proj_dim=64, warmup_min_rows=16)
    model = add_lora(base_model, cfg)
    pool = subset(planted.train, range(0, len(planted.train), len(planted.train) // 40))  # 40 rows, every source
    ckpts = warmup(model, subset(pool, range(16)), cfg)
    t = planted.target
    two_tasks = type(t)(t.input_ids, t.labels, np.arange(len(t)) % 2, ["even", "odd"], [], t.pad_id)
    both, info = influence_scores(model, pool, two_tasks, ckpts, dataclasses.replace(cfg, tasks="by_source"))
    single = [
        influence_scores(model, pool, subset(two_tasks, range(r, len(t), 2)), ckpts, cfg)[0] for r in (0, 1)
    ]
    assert info["tasks"] == ["even", "odd"]
    assert math.isclose(sum(info["lr_weights"]), 1.0)
    torch.testing.assert_close(both, torch.maximum(*single), atol=1e-5, rtol=1e-5)
