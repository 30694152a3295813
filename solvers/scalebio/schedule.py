"""Step-size factor s(t) and the α stages (ALGORITHMS.md §2, §5.3). Pure functions of the step index.

The same factor c = τ^-i · s(t) multiplies the learning rates of u, w and λ, so η_λ decays with the models'.
"""

from __future__ import annotations

import math

from solvers.scalebio.config import ScaleBiOConfig


def stage(t: int, cfg: ScaleBiOConfig) -> int:
    """Index i of the α stage that step ``t`` belongs to (steps split evenly, the last stage takes the
    rest)."""
    return min(t // (cfg.steps // cfg.stages), cfg.stages - 1)


def alpha(t: int, cfg: ScaleBiOConfig) -> float:
    """Penalty at step ``t``: α·τ^i in stage i."""
    return cfg.alpha * cfg.tau ** stage(t, cfg)


def lr_scale(t: int, cfg: ScaleBiOConfig) -> float:
    """c(t) = τ^-i · s(t): linear warmup s = t/W over W = int(warmup_ratio·T) steps, then cosine to 0 (or
    constant)."""
    total = cfg.steps
    warm = int(cfg.warmup_ratio * total)
    if t < warm:
        s = t / warm
    elif cfg.schedule == "constant":
        s = 1.0
    else:
        s = 0.5 * (1.0 + math.cos(math.pi * (t - warm) / (total - warm)))
    return s * cfg.tau ** -stage(t, cfg)
