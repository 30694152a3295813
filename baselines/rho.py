"""RHO-1-style selection by excess loss against a reference model (ALGORITHMS.md A.2 (b), SFT adaptation).

Lin et al., NeurIPS 2024 (Selective Language Modeling), turned into an example-level selector:

1. **Reference.** Fine-tune a copy of the base model on the target set (or a seeded ``reference_fraction``
   of it, the rest held out as a diagnostic) for ``reference_steps`` AdamW steps.
2. **Excess loss.** For every pool example x: ℓ_model(x) − ℓ_ref(x), with ℓ the response-token-mean NLL
   (``aggregate="mean"``). ``aggregate="token_topk"`` is closer to SLM: tokens are ranked by excess across the
   whole pool, the top ``token_keep`` share is kept, and an example scores the sum of its kept excesses
   divided by its response-token count (the share of SLM's loss it would contribute).
3. **Select.** The top ``select_fraction`` of the pool by excess (``select="top"``), or that many drawn
   without replacement with probability ∝ softmax(excess/T) (``"sample"``, Gumbel top-k). ``weights`` are the
   per-source shares of the selection, or with ``source_weights="excess"`` w_s ∝ max(mean excess of s, 0).

``model`` is the model whose loss is compared: pass the base model, or a current training checkpoint for an
online variant. The reference is always fine-tuned from it, on ``model``'s device; the losses and excesses stay
there, and only the final ``[N]`` scores come to the host for selection. ``autocast_bf16`` (CUDA) runs the
reference's training and every scoring pass under bf16 autocast; weights, moments and losses stay fp32.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from baselines.base import (
    MethodResult,
    StepCallback,
    check_choice,
    check_counts,
    check_fraction,
    check_int,
    check_pool,
    check_positive,
    example_result,
    n_selected,
    require_inputs,
    selection_weights,
)
from baselines.parts import Parts, load_state, save_state
from baselines.scoring import example_losses, example_token_losses, fit_reference, subset
from solvers.common import normalise, top_k
from solvers.data import TokenizedSet
from solvers.device import check_autocast, model_device


@dataclass(frozen=True)
class RhoConfig:
    """Settings of the RHO (reference-model excess loss) baseline."""

    reference_steps: int = 200
    """AdamW steps fitting the reference model on the target set."""
    reference_lr: float = 1e-4
    """Reference fine-tuning learning rate (tiny models trained from scratch need about 1e-3)."""
    reference_batch_size: int = 16
    """Target examples per reference step."""
    reference_fraction: float = 1.0
    """Share of the target (seeded draw) used to fit the reference; the rest is held out for ``info``."""
    aggregate: Literal["mean", "token_topk"] = "mean"
    """Per-example score: mean token excess, or SLM-style sum over globally top-``token_keep`` tokens."""
    token_keep: float = 0.6
    """Share of all pool tokens kept by ``aggregate="token_topk"`` (RHO-1 keeps 60–70%)."""
    select: Literal["top", "sample"] = "top"
    """``top``: the highest scores; ``sample``: draws ∝ softmax(score / temperature) without replacement."""
    select_fraction: float = 0.05
    """Share of the pool selected."""
    temperature: float = 1.0
    """Softmax temperature of ``select="sample"``."""
    source_weights: Literal["selection", "excess"] = "selection"
    """``selection``: per-source share of the selection; ``excess``: ∝ max(mean excess per source, 0)."""
    batch_size: int = 32
    """Examples per no-grad scoring forward pass."""
    checkpoint_rows: int = 8192
    """Rows scored between two stored parts of the pass (rounded up to a multiple of ``batch_size``): a killed
    run resumes from the last one (``aggregate="mean"``; ``token_topk`` needs every token at once)."""
    seed: int = 0
    """Seeds the reference batches, the held-out split and the sampling."""
    autocast_bf16: bool = False
    """Model passes under CUDA bf16 autocast (curate turns it on for a GPU ``device``); CUDA only."""

    def __post_init__(self) -> None:
        check_int("reference_steps", self.reference_steps, 0)
        check_int("reference_batch_size", self.reference_batch_size, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("checkpoint_rows", self.checkpoint_rows, 1)
        check_int("seed", self.seed, 0)
        check_positive("reference_lr", self.reference_lr)
        check_positive("temperature", self.temperature)
        check_fraction("reference_fraction", self.reference_fraction)
        check_fraction("token_keep", self.token_keep)
        check_fraction("select_fraction", self.select_fraction)
        check_choice("aggregate", self.aggregate, ("mean", "token_topk"))
        check_choice("select", self.select, ("top", "sample"))
        check_choice("source_weights", self.source_weights, ("selection", "excess"))


def excess_losses(model: nn.Module, reference: nn.Module, data: TokenizedSet, cfg: RhoConfig,
                  parts: Parts | None = None) -> torch.Tensor:
    """Per-example excess loss ℓ_model − ℓ_ref over ``data`` (``[N]``), aggregated per ``cfg.aggregate``.

    ``aggregate="mean"`` runs in chunks of ``checkpoint_rows`` (a multiple of ``batch_size``, so the batches are
    those of one pass) and keeps each in ``parts``: chunks stored by an earlier, killed run are read, not
    recomputed."""
    bf16 = cfg.autocast_bf16
    if cfg.aggregate == "mean":
        step = -(-cfg.checkpoint_rows // cfg.batch_size) * cfg.batch_size
        out = []
        for start in range(0, len(data), step):
            stored = parts.get(start) if parts is not None else None
            if stored is not None:
                out.append(torch.from_numpy(stored).float())
                continue
            chunk = subset(data, np.arange(start, min(len(data), start + step)))
            got = (example_losses(model, chunk, cfg.batch_size, bf16)
                   - example_losses(reference, chunk, cfg.batch_size, bf16)).float().cpu()
            if parts is not None:
                parts.put(start, got)
            out.append(got)
        return torch.cat(out) if out else torch.zeros(0)
    per_token = [
        a - b
        for a, b in zip(
            example_token_losses(model, data, cfg.batch_size, bf16),
            example_token_losses(reference, data, cfg.batch_size, bf16),
            strict=True,
        )
    ]
    return token_topk_scores(per_token, cfg.token_keep, device=model_device(model))


def _reference(model: nn.Module, fit_set: TokenizedSet, cfg: RhoConfig, on_step: StepCallback | None,
               checkpoint_dir: Path | None) -> nn.Module:
    """The reference fitted on the target, or the one an earlier run of this job stored."""
    stored = load_state(checkpoint_dir, REFERENCE_FILE)
    if stored is not None:
        reference = copy.deepcopy(model)
        reference.load_state_dict(stored)
        return reference.eval()
    reference = fit_reference(model, fit_set, steps=cfg.reference_steps, lr=cfg.reference_lr,
                              batch_size=cfg.reference_batch_size, seed=cfg.seed, on_step=on_step,
                              stage="rho_reference", autocast_bf16=cfg.autocast_bf16)
    save_state(checkpoint_dir, REFERENCE_FILE, {k: v.detach().cpu() for k, v in reference.state_dict().items()})
    return reference


REFERENCE_FILE = "rho_reference.pt"


def token_topk_scores(per_token: list[torch.Tensor], keep: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Σ of each example's excesses among the pool-wide top-``keep`` tokens / its token count (0 if none).

    The result is on the tensors' device (``device`` when there are none, so an empty pool still has one)."""
    flat = torch.cat(per_token) if per_token else torch.zeros(0, device=device)
    if flat.numel() == 0:
        return flat.new_zeros(len(per_token))
    n_keep = max(1, math.ceil(keep * flat.numel()))
    threshold = torch.topk(flat, n_keep).values.min()
    return torch.stack([(t * (t >= threshold)).sum() / max(1, t.numel()) for t in per_token])


def choose(scores: torch.Tensor, cfg: RhoConfig) -> list[int]:
    """Rows to keep, best (or first drawn) first: top-k, or Gumbel top-k sampling ∝ softmax(score / T)."""
    n = n_selected(len(scores), cfg.select_fraction)
    keys = scores.double().cpu().numpy()
    if cfg.select == "sample":
        keys = keys / cfg.temperature + np.random.default_rng(cfg.seed).gumbel(size=len(keys))
    return top_k(keys, n)


def _split_target(target: TokenizedSet, cfg: RhoConfig) -> tuple[TokenizedSet, TokenizedSet | None]:
    if cfg.reference_fraction >= 1:
        return target, None
    perm = np.random.default_rng(cfg.seed).permutation(len(target))
    cut = max(1, math.ceil(cfg.reference_fraction * len(target)))
    held = subset(target, np.sort(perm[cut:])) if cut < len(target) else None
    return subset(target, np.sort(perm[:cut])), held


def run_rho(
    cfg: RhoConfig,
    *,
    counts: Mapping[str, int],
    model: nn.Module | None = None,
    train: TokenizedSet | None = None,
    target: TokenizedSet | None = None,
    on_step: StepCallback | None = None,
    checkpoint_dir: Path | None = None,
) -> MethodResult:
    """Registry entry for ``rho``: fit the reference on the target, score the pool by excess loss, select.

    With ``checkpoint_dir`` the reference model and every scored chunk are stored there as they are done, and a
    later call with the same inputs (``curate reweight --resume``) reuses them.

    Args:
        cfg: the RHO settings.
        counts: examples per source; must match ``train``.
        model: the model whose loss is compared (base or current checkpoint); not modified.
        train: the pool to score.
        target: clean, in-distribution examples the reference is fitted on.
        on_step: receives one record per reference step.

    Returns:
        Excess-loss scores for every pool row, the selected ids and the implied per-source weights.
    """
    names = check_counts(counts)
    model, train, target = require_inputs("rho", model=model, train=train, target=target)
    check_pool(counts, train)
    check_autocast(cfg.autocast_bf16, model_device(model), "rho")
    fit_set, held = _split_target(target, cfg)
    reference = _reference(model, fit_set, cfg, on_step, checkpoint_dir)
    excess = excess_losses(model, reference, train, cfg, Parts(checkpoint_dir, "rho-excess") if checkpoint_dir
                           else None)
    rows = choose(excess, cfg)
    scores = excess.double().cpu().numpy()  # the [N] result comes to the host once
    if cfg.source_weights == "excess":
        mean = {
            train.sources[s]: float(scores[train.source_ids == s].mean())
            for s in range(len(train.sources))
            if (train.source_ids == s).any()
        }
        weights = normalise({name: max(mean.get(name, 0.0), 0.0) for name in names}, when_zero="uniform")
    else:
        weights = selection_weights(train, rows, names)
    info: dict[str, object] = {"reference_rows": len(fit_set), "mean_excess": float(scores.mean())}
    if held is not None:
        info["heldout_loss_model"] = float(example_losses(model, held, cfg.batch_size, cfg.autocast_bf16).mean())
        info["heldout_loss_reference"] = float(
            example_losses(reference, held, cfg.batch_size, cfg.autocast_bf16).mean())
    return example_result(train, scores.tolist(), rows, weights, info)
