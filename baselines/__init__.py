"""Baseline data-selection methods behind one registry: uniform, proportional, temperature, LESS, RHO, DoReMi.

Every method is called the same way and returns the same plain result (ALGORITHMS.md "Baselines")::

    from baselines import BASELINES, run, MethodResult
    result = run("temperature", counts={"a": 100, "b": 10})                  # default config
    result = run("rho", RhoConfig(reference_steps=50), counts=counts, model=model, train=pool, target=val)
    result.weights     # dict[str, float] on the simplex, keys = counts' keys, in that order
    result.scores      # list[(example_id, source, score)] for example-level methods (less, rho), else None
    result.selected    # example ids chosen by less/rho, best first, else None
    result.trajectory  # per-step records of doremi, else None
    result.info        # method-specific diagnostics

Inputs:
- ``counts``: examples per source. Per-source methods (uniform, proportional, temperature) need nothing else.
- ``model``: the base causal LM (HF-style: ``model(input_ids=, attention_mask=).logits``); never modified, the
  model-based methods work on deep copies.
- ``train``: the pool as a :class:`~solvers.data.TokenizedSet`; its sources and per-source sizes must match
  ``counts``.
- ``target``: the clean / in-domain :class:`~solvers.data.TokenizedSet` (LESS, RHO; DoReMi only with
  ``reference_data="target"``).
- ``on_step``: optional callback receiving one ``dict`` per optimisation step (``stage``, ``step``, metrics).
- ``device``: where the model-based methods run (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``None``: where ``model``
  is. Every copy of the model and every tensor a method makes lives there; set the config's ``autocast_bf16``
  for bf16 model passes on a GPU (weights and statistics stay fp32).

Example-level methods turn their selection into per-source weights (share of selected examples per source), so
every method can feed the same resampler. ``BASELINES[name]`` is a :class:`Method` naming the config class and
the inputs the method needs, so a CLI can build configs and check inputs before doing any work.

This package imports ``solvers`` and never ``curate``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from baselines.base import ExampleId, MethodResult, StepCallback, check_counts
from baselines.doremi import DoremiConfig, run_doremi
from baselines.less import LessConfig, run_less
from baselines.rho import RhoConfig, run_rho
from baselines.simple import (
    ProportionalConfig,
    TemperatureConfig,
    UniformConfig,
    run_proportional,
    run_temperature,
    run_uniform,
)
from solvers.data import TokenizedSet

__all__ = [
    "BASELINES",
    "DoremiConfig",
    "ExampleId",
    "LessConfig",
    "Method",
    "MethodResult",
    "ProportionalConfig",
    "RhoConfig",
    "StepCallback",
    "TemperatureConfig",
    "UniformConfig",
    "run",
]


@dataclass(frozen=True)
class Method:
    """A registered baseline: its config class, its entry point and what it needs."""

    name: str
    config: type
    """The frozen config dataclass; ``config()`` gives the defaults."""
    fn: Callable[..., MethodResult]
    """``fn(cfg, *, counts, model, train, target, on_step) -> MethodResult``."""
    level: Literal["source", "example"]
    """``source``: weights only; ``example``: also per-example scores and a selection."""
    needs: tuple[str, ...]
    """Inputs besides ``counts`` that must not be ``None`` (DoReMi's ``target`` depends on its config)."""
    resumable: bool = False
    """``fn`` also takes ``checkpoint_dir``: it stores its passes there and a later call continues them."""


BASELINES: dict[str, Method] = {
    "uniform": Method("uniform", UniformConfig, run_uniform, "source", ()),
    "proportional": Method("proportional", ProportionalConfig, run_proportional, "source", ()),
    "temperature": Method("temperature", TemperatureConfig, run_temperature, "source", ()),
    "less": Method("less", LessConfig, run_less, "example", ("model", "train", "target"), resumable=True),
    "rho": Method("rho", RhoConfig, run_rho, "example", ("model", "train", "target"), resumable=True),
    "doremi": Method("doremi", DoremiConfig, run_doremi, "source", ("model", "train")),
}


def run(
    method_name: str,
    cfg: Any = None,
    *,
    counts: Mapping[str, int],
    model: Any = None,
    train: TokenizedSet | None = None,
    target: TokenizedSet | None = None,
    on_step: StepCallback | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: Path | None = None,
) -> MethodResult:
    """Run the baseline ``method_name`` with ``cfg`` (``None``: its default config).

    Args:
        method_name: a key of :data:`BASELINES`.
        cfg: an instance of ``BASELINES[method_name].config``, or ``None`` for the defaults.
        counts: examples per source; its keys (in order) are the keys of the returned weights.
        model: the base causal LM (model-based methods only).
        train: the tokenized pool (model-based methods only).
        target: the tokenized target set (LESS, RHO, DoReMi with ``reference_data="target"``).
        on_step: optional per-step callback.
        device: where a model-based method runs; ``None``: on ``model``'s device. A model elsewhere is copied
            there (the caller's model is never modified; move it first to save that copy).
        checkpoint_dir: for a resumable method (LESS, RHO), where its whole-pool pass is stored chunk by chunk
            (:mod:`baselines.parts`); what an earlier, interrupted call stored there is reused.

    Returns:
        The method's :class:`MethodResult`.

    Raises:
        ValueError: unknown method, a config of the wrong type, a missing input, or counts that do not match
            ``train``.
    """
    if method_name not in BASELINES:
        raise ValueError(f"unknown baseline {method_name!r}; choose one of {sorted(BASELINES)}")
    method = BASELINES[method_name]
    cfg = method.config() if cfg is None else cfg
    if not isinstance(cfg, method.config):
        raise ValueError(f"{method_name} needs a {method.config.__name__}, got {type(cfg).__name__}")
    check_counts(counts)
    inputs = {"model": model, "train": train, "target": target}
    for name in method.needs:
        if inputs[name] is None:
            raise ValueError(f"method {method_name!r} needs {name}=..., got None")
    if model is not None and device is not None:
        model = on_device(model, torch.device(device))
    extra = {"checkpoint_dir": checkpoint_dir} if method.resumable and checkpoint_dir is not None else {}
    return method.fn(cfg, counts=counts, model=model, train=train, target=target, on_step=on_step, **extra)


def on_device(model: Any, device: torch.device) -> Any:
    """``model`` itself when it is on ``device`` already, else a copy there (the methods never modify it)."""
    current = next(model.parameters()).device
    if current == device or (device.type == current.type == "cuda" and device.index is None
                             and current.index == torch.cuda.current_device()):
        return model
    return copy.deepcopy(model).to(device)
