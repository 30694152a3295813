"""Helpers the model-based baselines share: batched no-grad losses over a pool, and a short seeded SFT loop.

RHO and DoReMi both need a *reference model* (the base fine-tuned for a fixed number of steps on some data)
and the per-example or per-token loss of a model over a whole :class:`~solvers.data.TokenizedSet`. Losses are
the response-token means of ``solvers.lm`` (ALGORITHMS.md §2.2), computed in eval mode so dropout does not add
noise to scores. Fine-tuning never touches the caller's model: it trains and returns a deep copy.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from baselines.base import StepCallback
from solvers.data import SourceSampler, TokenizedSet
from solvers.lm import per_example_loss, token_losses, token_mean_loss


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def subset(data: TokenizedSet, rows: Iterable[int] | np.ndarray) -> TokenizedSet:
    """The rows ``rows`` of ``data`` as a new set with the same source list (ids are kept when present)."""
    rows = [int(r) for r in rows]
    return TokenizedSet(
        input_ids=[data.input_ids[r] for r in rows],
        labels=[data.labels[r] for r in rows],
        source_ids=data.source_ids[np.asarray(rows, dtype=np.int64)],
        sources=list(data.sources),
        example_ids=[data.example_ids[r] for r in rows] if data.example_ids else [],
        pad_id=data.pad_id,
    )


def _row_batches(n: int, batch_size: int) -> Iterator[list[int]]:
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))


@torch.no_grad()
def example_losses(model: nn.Module, data: TokenizedSet, batch_size: int = 32) -> torch.Tensor:
    """Response-token-mean NLL of every row of ``data`` under ``model``, shape ``[len(data)]``, fp32, on CPU.

    Rows with no response tokens get 0 (the convention of :func:`solvers.lm.per_example_loss`).
    """
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for rows in _row_batches(len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.batch(rows).items()}
            out.append(per_example_loss(model, batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def example_token_losses(model: nn.Module, data: TokenizedSet, batch_size: int = 32) -> list[torch.Tensor]:
    """Per-token NLL of the response tokens of every row, one 1-D fp32 CPU tensor per row (may be empty)."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    with eval_mode(model):
        for rows in _row_batches(len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.batch(rows).items()}
            nll, valid = token_losses(model, batch)
            out.extend(nll[i][valid[i]].float().cpu() for i in range(len(rows)))
    return out


def finetune(
    model: nn.Module,
    data: TokenizedSet,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    mode: Literal["stratified", "proportional"] = "proportional",
    on_step: StepCallback | None = None,
    stage: str = "reference",
) -> nn.Module:
    """A copy of ``model`` fine-tuned on ``data`` for ``steps`` AdamW steps (constant lr, seeded batches).

    Batches come from :class:`~solvers.data.SourceSampler` (``mode="proportional"``: uniform over rows;
    ``"stratified"``: equal rows per source, i.e. the uniform mixture). The loss is the token mean over the
    batch's response tokens. Returns the copy in eval mode.
    """
    tuned = copy.deepcopy(model)
    if steps == 0 or len(data) == 0:
        return tuned.eval()
    device = next(tuned.parameters()).device
    sampler = SourceSampler(data, batch_size, seed=seed, mode=mode)
    opt = torch.optim.AdamW(
        [p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    tuned.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            batch = {k: v.to(device) for k, v in sampler.next().items()}
            loss = token_mean_loss(tuned, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step({"stage": stage, "step": step, "loss": loss.detach().item()})
    return tuned.eval()
