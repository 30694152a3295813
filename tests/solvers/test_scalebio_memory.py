"""LISA's memory: optimizer state only where training happens (ALGORITHMS.md §3), measured exactly."""

from __future__ import annotations

import pytest
import torch

from solvers.lm import find_blocks, tiny_llama
from solvers.memory import breakdown, optimizer_state_bytes, params_with_state, tensor_bytes
from solvers.scalebio.lisa import Lisa
from solvers.scalebio.step import init_state, scalebio_step

LAYERS, ACTIVE = 6, 2


def batch(seed: int, rows: int = 6, width: int = 12, vocab: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (rows, width), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "source_ids": torch.arange(rows) % 3}


def run_lisa(release: bool, periods: int = 8):
    model = tiny_llama(64, hidden=32, layers=LAYERS, heads=2, max_len=16, seed=0)
    state = init_state(model, 3, 1e-3, 1e-2, 5e-4, 0.01)
    lisa = Lisa([state.u, state.w], n_active=ACTIVE, period=1, seed=0, release_state=release)
    seen: list[set[int]] = [set(), set()]
    for t in range(periods):
        lisa.maybe_redraw(t, [state.opt_u, state.opt_w])
        for s, active in zip(seen, lisa.active, strict=True):
            s.update(active)
        scalebio_step(state, batch(2 * t), batch(2 * t + 1), alpha=10.0, lr_model=1e-3, lr_lambda=1e-2,
                      n_sources=3)
    return state, lisa, seen


def block_and_rest(model: torch.nn.Module) -> tuple[int, int]:
    """Parameters of one block, and of everything outside the blocks (embeddings, final norm, head)."""
    blocks = find_blocks(model)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    return per_block, sum(p.numel() for p in model.parameters()) - len(blocks) * per_block


def test_released_lisa_state_is_bounded_by_the_active_blocks():
    state, lisa, seen = run_lisa(release=True)
    assert all(len(s) > ACTIVE + 1 for s in seen)  # the draws visited many blocks over the 8 periods
    for model, opt, active in ((state.u, state.opt_u, lisa.active[0]), (state.w, state.opt_w, lisa.active[1])):
        per_block, rest = block_and_rest(model)
        assert params_with_state(opt) == rest + ACTIVE * per_block
        # AdamW: two fp32 moments per parameter plus a scalar step per tensor
        n_tensors = len(opt.state)
        assert optimizer_state_bytes(opt) == 4 * 2 * (rest + ACTIVE * per_block) + 4 * n_tensors
        blocks = find_blocks(model)
        for i, block in enumerate(blocks):
            assert all((p in opt.state) == (i in active) for p in block.parameters())


def test_kept_lisa_state_grows_to_every_block_drawn():
    """Control: without release, AdamW keeps the moments of every block ever drawn (what release fixes)."""
    state, _, seen = run_lisa(release=False)
    released, _, _ = run_lisa(release=True)
    for model, opt, s in ((state.u, state.opt_u, seen[0]), (state.w, state.opt_w, seen[1])):
        per_block, rest = block_and_rest(model)
        assert params_with_state(opt) == rest + len(s) * per_block
    kept = breakdown([state.u, state.w], [state.opt_u, state.opt_w])
    freed = breakdown([released.u, released.w], [released.opt_u, released.opt_w])
    assert freed.optimizer < kept.optimizer and freed.params == kept.params


def test_release_needs_one_optimizer_per_model():
    state = init_state(tiny_llama(64, hidden=32, layers=2, heads=2, max_len=16), 3, 1e-3, 1e-2, 5e-4, 0.01)
    with pytest.raises(ValueError, match="one optimizer per model"):
        Lisa([state.u, state.w], 1, 1, 0, release_state=True).maybe_redraw(0, [state.opt_u])


def test_tensor_bytes_counts_shared_storage_once():
    x = torch.zeros(10)
    assert tensor_bytes([x, x, x[2:], None]) == 40
