"""Per-source weights from source sizes alone: uniform, proportional and temperature (ALGORITHMS.md A.3).

- uniform: w_s = 1/K, ScaleBiO's starting point (λ = 0).
- proportional: w_s = n_s / Σ n, i.e. uniform over examples.
- temperature: w_s ∝ n_s^(1/T). T = 1 is proportional, T → ∞ is uniform; the default T = 1/0.3 is mT5's
  α = 0.3.

A UniMax-style epoch cap is not a weighting rule but a resampling constraint, so it lives in the resampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from baselines.base import MethodResult, check_counts, check_positive
from solvers.common import normalise


@dataclass(frozen=True)
class UniformConfig:
    """Uniform over sources has no settings."""


@dataclass(frozen=True)
class ProportionalConfig:
    """Proportional to source size has no settings."""


@dataclass(frozen=True)
class TemperatureConfig:
    """Temperature sampling, w_s ∝ n_s^(1/T)."""

    temperature: float = 1.0 / 0.3
    """T > 0. 1 gives proportional weights, larger T flattens toward uniform (mT5: 1/0.3, XLM-R: 1/0.7)."""

    def __post_init__(self) -> None:
        check_positive("temperature", self.temperature)


def uniform_weights(counts: Mapping[str, int]) -> dict[str, float]:
    """w_s = 1/K for every source in ``counts``, whatever its size."""
    names = check_counts(counts)
    return {name: 1.0 / len(names) for name in names}


def temperature_weights(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """w_s ∝ n_s^(1/T), computed in log space so huge counts and large T stay exact.

    Raises:
        ValueError: when every source is empty (the weights are undefined).
    """
    names = check_counts(counts)
    if sum(counts.values()) == 0:
        raise ValueError("counts are all 0: size-based weights are undefined")
    logs = {name: math.log(counts[name]) / temperature for name in names if counts[name] > 0}
    top = max(logs.values())
    return normalise({name: math.exp(logs[name] - top) if name in logs else 0.0 for name in names},
                     when_zero="uniform")


def proportional_weights(counts: Mapping[str, int]) -> dict[str, float]:
    """w_s = n_s / Σ n (uniform over examples)."""
    return temperature_weights(counts, 1.0)


def run_uniform(cfg: UniformConfig, *, counts: Mapping[str, int], **_: object) -> MethodResult:
    """Registry entry for ``uniform``."""
    return MethodResult(weights=uniform_weights(counts))


def run_proportional(cfg: ProportionalConfig, *, counts: Mapping[str, int], **_: object) -> MethodResult:
    """Registry entry for ``proportional``."""
    return MethodResult(weights=proportional_weights(counts))


def run_temperature(cfg: TemperatureConfig, *, counts: Mapping[str, int], **_: object) -> MethodResult:
    """Registry entry for ``temperature``."""
    return MethodResult(
        weights=temperature_weights(counts, cfg.temperature), info={"temperature": cfg.temperature}
    )
