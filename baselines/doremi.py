"""DoReMi: domain weights from a proxy trained with Group DRO against a reference (ALGORITHMS.md A.2 (a)).

Xie et al., NeurIPS 2023. Two copies of the base model:

1. **Reference.** Fine-tuned for ``reference_steps`` on the uniform mixture of the pool (``reference_data=
   "uniform"``, stratified batches), on natural proportions (``"proportional"``, the repo's default and the
   maintainer's advice against collapse), or on the target set (``"target"``, an extension for denoising: the
   reference then knows what clean data looks like).
2. **Proxy, Group DRO.** Each step draws a batch with sampling distribution π (``sampling``) and computes:

       per-token excess   e_j = max(ℓ_θ(x_j) − ℓ_ref(x_j), 0)
       per-domain score   λ_t[s] = mean of e over the batch's response tokens of s (absent s: λ_{t−1}[s])
       EG update          log α'_t = log α_{t−1} + η λ_t,  α'_t = softmax(log α'_t)
       smoothing          α_t = (1 − c) α'_t + c / k
       proxy loss         Σ_j (α_t[s_j] / π_{s_j}) ℓ_θ(x_j) / Σ_j (α_t[s_j] / π_{s_j})

   and takes one AdamW step on the proxy. α_0 is uniform.

The output is the time average ᾱ = (1/T) Σ_t α_t; ``trajectory`` holds α_t, λ_t and the proxy loss per step.

The reference and the proxy train where ``model`` is, and α, λ and π live there too (fp64: they are k numbers,
and the EG update's exponent must not round); ``autocast_bf16`` (CUDA) runs every model pass under bf16
autocast while the weights and AdamW moments stay fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
    require_inputs,
)
from baselines.scoring import fit_reference
from solvers.common import normalise
from solvers.data import SourceSampler, TokenizedSet
from solvers.device import bf16_autocast, check_autocast, model_device, rng_devices
from solvers.lm import token_losses


@dataclass(frozen=True)
class DoremiConfig:
    """Settings of the DoReMi baseline."""

    reference_data: Literal["uniform", "proportional", "target"] = "uniform"
    """What the reference is fitted on: the pool's uniform or natural mixture, or the target set."""
    reference_steps: int = 200
    """AdamW steps fitting the reference."""
    proxy_steps: int = 200
    """Group-DRO steps of the proxy (one weight update each)."""
    reference_lr: float = 1e-4
    """Learning rate of the reference (tiny models trained from scratch need about 1e-3)."""
    proxy_lr: float = 1e-4
    """Learning rate of the proxy; 0 freezes it (then λ only measures the base-vs-reference gap)."""
    batch_size: int = 32
    """Examples per reference and proxy step; keep it well above the number of sources."""
    sampling: Literal["uniform", "proportional"] = "uniform"
    """π of the proxy batches: equal rows per source (stratified) or uniform over rows."""
    eta: float = 1.0
    """Step size η of the exponentiated-gradient update (DoReMi's ``reweight_eta``; 0.1 against collapse)."""
    smoothing: float = 1e-3
    """c in α = (1 − c) α' + c/k (``reweight_eps``: 1e-4 default, 1e-3 in the Pile script)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the reference and the proxy."""
    seed: int = 0
    """Seeds the reference and proxy batch streams."""
    autocast_bf16: bool = False
    """Model passes under CUDA bf16 autocast (curate turns it on for a GPU ``device``); CUDA only."""

    def __post_init__(self) -> None:
        check_choice("reference_data", self.reference_data, ("uniform", "proportional", "target"))
        check_choice("sampling", self.sampling, ("uniform", "proportional"))
        check_int("reference_steps", self.reference_steps, 0)
        check_int("proxy_steps", self.proxy_steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_positive("reference_lr", self.reference_lr)
        check_positive("proxy_lr", self.proxy_lr, allow_zero=True)
        check_positive("eta", self.eta, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_fraction("smoothing", self.smoothing, low_open=False)


def eg_update(weights: torch.Tensor, excess: torch.Tensor, eta: float, smoothing: float) -> torch.Tensor:
    """One DoReMi weight update: softmax(log α + η λ), then mixed with uniform by ``smoothing``. Pure."""
    new = torch.softmax(torch.log(weights) + eta * excess, dim=0)
    return (1 - smoothing) * new + smoothing / weights.numel()


def domain_excess(
    nll: torch.Tensor,
    ref_nll: torch.Tensor,
    valid: torch.Tensor,
    source_ids: torch.Tensor,
    previous: torch.Tensor,
) -> torch.Tensor:
    """λ_t: per-domain mean of the per-token excess max(ℓ_θ − ℓ_ref, 0); ``previous`` for absent domains.

    Computed where the inputs are (all on one device)."""
    k = previous.numel()
    excess = ((nll - ref_nll).clamp_min(0) * valid).sum(dim=1)
    tokens = valid.sum(dim=1).to(excess.dtype)
    total = torch.zeros(k, dtype=excess.dtype, device=excess.device).index_add_(0, source_ids, excess)
    count = torch.zeros(k, dtype=excess.dtype, device=excess.device).index_add_(0, source_ids, tokens)
    return torch.where(count > 0, total / count.clamp_min(1), previous)


def weighted_proxy_loss(
    nll: torch.Tensor, valid: torch.Tensor, source_ids: torch.Tensor, weights: torch.Tensor, pi: torch.Tensor
) -> torch.Tensor:
    """Σ_j (α[s_j]/π[s_j]) ℓ_j / Σ_j (α[s_j]/π[s_j]) over the batch's response tokens (sampling-corrected)."""
    ratio = torch.where(pi > 0, weights / pi.clamp_min(1e-12), torch.zeros_like(weights))[source_ids]
    tok_w = ratio[:, None].to(nll.dtype) * valid
    return (tok_w * nll).sum() / tok_w.sum().clamp_min(1e-12)


def _sampling_dist(train: TokenizedSet, sampling: str, device: torch.device) -> torch.Tensor:
    sizes = torch.as_tensor(train.counts(), dtype=torch.float64, device=device)
    if sampling == "proportional":
        return sizes / sizes.sum()
    present = (sizes > 0).double()
    return present / present.sum()


def _reference(
    model: nn.Module,
    train: TokenizedSet,
    target: TokenizedSet | None,
    cfg: DoremiConfig,
    on_step: StepCallback | None,
) -> nn.Module:
    data = target if cfg.reference_data == "target" else train
    if data is None:
        raise ValueError("doremi with reference_data='target' needs target=...")
    mode: Literal["stratified", "proportional"] = (
        "stratified" if cfg.reference_data == "uniform" else "proportional"
    )
    return fit_reference(
        model,
        data,
        steps=cfg.reference_steps,
        lr=cfg.reference_lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        weight_decay=cfg.weight_decay,
        mode=mode,
        on_step=on_step,
        stage="doremi_reference",
        autocast_bf16=cfg.autocast_bf16,
    )


def train_proxy(
    model: nn.Module,
    reference: nn.Module,
    train: TokenizedSet,
    cfg: DoremiConfig,
    on_step: StepCallback | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """DoReMi step 2 on a copy of ``model``: ᾱ (in ``train.sources`` order) and the per-step trajectory."""
    proxy = copy.deepcopy(model).train()
    reference.eval()
    device = model_device(proxy)
    check_autocast(cfg.autocast_bf16, device, "doremi")
    k = len(train.sources)
    pi = _sampling_dist(train, cfg.sampling, device)
    sampler = SourceSampler(
        train,
        cfg.batch_size,
        seed=cfg.seed + 1,
        mode="stratified" if cfg.sampling == "uniform" else "proportional",
    )
    opt = torch.optim.AdamW(proxy.parameters(), lr=cfg.proxy_lr, weight_decay=cfg.weight_decay)
    alpha = torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)
    lam = torch.zeros(k, dtype=torch.float64, device=device)
    total, trajectory = torch.zeros(k, dtype=torch.float64, device=device), []
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(cfg.seed)
        for step in range(cfg.proxy_steps):
            batch = {key: v.to(device) for key, v in sampler.next().items()}
            with bf16_autocast(cfg.autocast_bf16):
                nll, valid = token_losses(proxy, batch)
                with torch.no_grad():
                    ref_nll, _ = token_losses(reference, batch)
            lam = domain_excess(nll.detach().double(), ref_nll.double(), valid, batch["source_ids"], lam)
            alpha = eg_update(alpha, lam, cfg.eta, cfg.smoothing)
            loss = weighted_proxy_loss(nll, valid, batch["source_ids"], alpha, pi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += alpha
            record = {
                "step": step,
                "loss": loss.detach().item(),
                "weights": dict(zip(train.sources, alpha.tolist(), strict=True)),
                "excess": dict(zip(train.sources, lam.tolist(), strict=True)),
            }
            trajectory.append(record)
            if on_step is not None:
                on_step({"stage": "doremi_proxy", **record})
    return total / cfg.proxy_steps, trajectory


def run_doremi(
    cfg: DoremiConfig,
    *,
    counts: Mapping[str, int],
    model: nn.Module | None = None,
    train: TokenizedSet | None = None,
    target: TokenizedSet | None = None,
    on_step: StepCallback | None = None,
) -> MethodResult:
    """Registry entry for ``doremi``: fit the reference, run Group DRO on the proxy, return ᾱ.

    Args:
        cfg: the DoReMi settings.
        counts: examples per source; must match ``train``.
        model: the base causal LM both the reference and the proxy start from (not modified).
        train: the pool, whose sources are the domains.
        target: needed only when ``cfg.reference_data == "target"``.
        on_step: receives one record per reference and proxy step.

    Returns:
        Time-averaged domain weights keyed by source name, and the per-step trajectory.
    """
    names = check_counts(counts)
    model, train = require_inputs("doremi", model=model, train=train)
    if cfg.reference_data == "target":
        (target,) = require_inputs("doremi", target=target)
    check_pool(counts, train)
    check_autocast(cfg.autocast_bf16, model_device(model), "doremi")
    reference = _reference(model, train, target, cfg, on_step)
    mean_alpha, trajectory = train_proxy(model, reference, train, cfg, on_step)
    by_name = dict(zip(train.sources, mean_alpha.tolist(), strict=True))
    mean_excess = np.mean([list(r["excess"].values()) for r in trajectory], axis=0)
    info = {
        "final_weights": trajectory[-1]["weights"],
        "mean_excess": dict(zip(train.sources, mean_excess.tolist(), strict=True)),
    }
    weights = normalise({name: by_name[name] for name in names}, when_zero="uniform")
    return MethodResult(weights=weights, trajectory=trajectory, info=info)
