"""Maps between the logits λ and the source weights p = softmax(λ) (ALGORITHMS.md §1.2), and summaries of p.
 Pure tensor functions. The softmax is always taken in fp32 (or fp64 if λ is fp64) so the weights stay exact
when the models run in bf16 (ALGORITHMS.md pitfall 5).
"""

from __future__ import annotations

import math

import torch


def weights(logits: torch.Tensor) -> torch.Tensor:
    """p = softmax(λ) in at least fp32; differentiable in ``logits``."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return torch.softmax(logits.to(dtype), dim=-1)


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy H(p) in nats, with 0·log 0 = 0."""
    p = p.detach().double()
    return float(-(p * torch.log(p.clamp_min(1e-300))).sum())


def effective_sources(p: torch.Tensor) -> float:
    """exp(H(p)): K for uniform weights, 1 when all weight sits on one source."""
    return math.exp(entropy(p))


def named(p: torch.Tensor, sources: list[str]) -> dict[str, float]:
    """``{source: weight}`` as plain floats, in ``sources`` order."""
    return {s: float(v) for s, v in zip(sources, p.detach().cpu().tolist(), strict=True)}
