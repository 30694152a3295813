"""Helpers the model-based baselines share: batched no-grad losses over a pool, and the reference-model fit.

RHO and DoReMi both need a *reference model* (the base fine-tuned for a fixed number of steps on some data)
and the per-example or per-token loss of a model over a whole :class:`~solvers.data.TokenizedSet`. Losses are
the response-token means of ``solvers.lm`` (ALGORITHMS.md §2.2), computed in eval mode so dropout does not add
noise to scores. The reference is fitted by the project's one SFT loop (:func:`solvers.sft.finetune`) on a deep
copy, never on the caller's model.

Everything runs where the model is (:mod:`solvers.device`): batches are moved there, losses stay there until the
method turns its scores into Python numbers, and ``autocast_bf16`` runs the passes under CUDA bf16 autocast
(losses are still taken on fp32 logits).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from baselines.base import StepCallback
from solvers.data import TokenizedSet
from solvers.device import bf16_autocast, check_autocast, model_device
from solvers.lm import per_example_loss, token_losses
from solvers.sft import SamplerMode, finetune


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
    """The rows ``rows`` of ``data`` as a new set with the same source list (ids are kept when present); a streamed
    set (:class:`solvers.stream.StreamedSet`) stays streamed."""
    if hasattr(data, "subset"):
        return data.subset(np.asarray(list(rows), dtype=np.int64))
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
def example_losses(model: nn.Module, data: TokenizedSet, batch_size: int = 32,
                   autocast_bf16: bool = False) -> torch.Tensor:
    """Response-token-mean NLL of every row of ``data`` under ``model``, shape ``[len(data)]``, fp32, on the
    model's device (one transfer at the end beats one per batch).

    Rows with no response tokens get 0 (the convention of :func:`solvers.lm.per_example_loss`).
    """
    device = model_device(model)
    check_autocast(autocast_bf16, device, "example_losses")
    out = []
    with eval_mode(model), bf16_autocast(autocast_bf16):
        for rows in _row_batches(len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.batch(rows).items()}
            out.append(per_example_loss(model, batch).float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


@torch.no_grad()
def example_token_losses(model: nn.Module, data: TokenizedSet, batch_size: int = 32,
                         autocast_bf16: bool = False) -> list[torch.Tensor]:
    """Per-token NLL of the response tokens of every row, one 1-D fp32 tensor per row (may be empty), on the
    model's device."""
    device = model_device(model)
    check_autocast(autocast_bf16, device, "example_token_losses")
    out: list[torch.Tensor] = []
    with eval_mode(model), bf16_autocast(autocast_bf16):
        for rows in _row_batches(len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.batch(rows).items()}
            nll, valid = token_losses(model, batch)
            out.extend(nll[i][valid[i]].float() for i in range(len(rows)))
    return out


def fit_reference(
    model: nn.Module,
    data: TokenizedSet,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    mode: SamplerMode = "proportional",
    on_step: StepCallback | None = None,
    stage: str = "reference",
    autocast_bf16: bool = False,
) -> nn.Module:
    """A reference model: a copy of ``model`` fine-tuned on ``data`` for ``steps`` AdamW steps, in eval mode.

    The one loop of :func:`solvers.sft.finetune` with the settings of the authors' reference training, so RHO
    and DoReMi match their transcriptions: constant ``lr``, torch's default AdamW betas, no clipping, decay (if
    any) on every parameter. ``mode="proportional"`` draws batches uniformly over rows, ``"stratified"`` equal
    rows per source (the uniform mixture). The copy trains where ``model`` is (``autocast_bf16``: under CUDA bf16
    autocast, weights and AdamW moments fp32). The caller's model is never touched; with no steps or no data the
    copy is returned untrained.
    """
    tuned = copy.deepcopy(model)
    if steps == 0 or len(data) == 0:
        return tuned.eval()
    finetune(tuned, data, steps=steps, lr=lr, batch_size=batch_size, seed=seed, weight_decay=weight_decay,
             schedule="constant", betas=(0.9, 0.999), grad_clip=None, decay_all=True, mode=mode, stage=stage,
             on_step=on_step, autocast_bf16=autocast_bf16)
    return tuned.eval()
