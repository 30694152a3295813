"""The one LoRA settings type and adapter constructor, for every method that trains adapters.

ScaleBiO's LoRA lower level (two adapters, u and w, over one frozen base) and LESS's warmup (one adapter whose
gradients become features) both wrap a model with peft the same way: seeded init of the A matrices without
touching the caller's RNG, no bias training, and a deep copy unless the caller hands its model over. peft is
imported only when adapters are built, so the settings can be made and checked without it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from solvers.device import model_device, rng_devices

ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter shape (peft ``LoraConfig`` fields) and the seed of its init."""

    r: int = 8
    """Rank of the update B·A."""
    alpha: float = 16.0
    """Scaling numerator: the update is scaled by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapter's input while training."""
    target_modules: str | tuple[str, ...] = ALL_LINEAR
    """``"all-linear"`` (every linear layer but the output head), a comma-separated string of module names, or
    a tuple of them."""
    seed: int = 0
    """Seeds the random init of the adapters' A matrices."""


def peft_targets(target_modules: str | Sequence[str]) -> str | list[str]:
    """``target_modules`` as peft takes it: ``"all-linear"`` as is, anything else as a list of leaf names."""
    if target_modules == ALL_LINEAR:
        return ALL_LINEAR
    if isinstance(target_modules, str):
        return [t.strip() for t in target_modules.split(",") if t.strip()]
    return list(target_modules)


def peft_config(spec: LoraSpec) -> Any:
    """The peft ``LoraConfig`` of ``spec`` (bias left frozen)."""
    from peft import LoraConfig

    alpha: Any = spec.alpha  # peft annotates lora_alpha as int; it only divides by r
    return LoraConfig(r=spec.r, lora_alpha=alpha, lora_dropout=spec.dropout,
                      target_modules=peft_targets(spec.target_modules), bias="none")


def with_adapters(model: nn.Module, spec: LoraSpec, names: Sequence[str] = ("default",),
                  consume: bool = False) -> nn.Module:
    """A peft model over a deep copy of ``model`` (over ``model`` itself when ``consume``) carrying one adapter
    per name in ``names``, all shaped by ``spec``; the first is active.

    The init is seeded by ``spec.seed`` inside a forked RNG, so building adapters neither depends on nor moves
    the caller's torch random stream. Which parameters train is left to peft (only the active adapter's).
    """
    from peft import get_peft_model

    config = peft_config(spec)
    # A model on a GPU gets its adapters initialised there, by the CUDA generator: fork it too.
    with torch.random.fork_rng(devices=rng_devices(model_device(model))):
        torch.manual_seed(spec.seed)
        peft_model = get_peft_model(model if consume else copy.deepcopy(model), config, adapter_name=names[0])
        for name in names[1:]:
            peft_model.add_adapter(name, config)
    return peft_model
