"""Where a method's model passes run: the model's device, bf16 autocast on a GPU, and the RNGs to fork.

Every method (ScaleBiO, LESS, RHO, DoReMi, the SFT loop) follows one rule: the caller puts the model on the
device (``curate`` resolves ``device=auto|cpu|cuda[:N]``), and every tensor the method creates is made where the
model is, read from :func:`model_device`. On CUDA the forward passes may run under bf16 autocast while the
weights, gradients, optimizer moments and the method's statistics (weights on sources, scores, projections) stay
fp32, because bf16's 8-bit mantissa cannot hold small optimizer updates or sums over a pool.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter: where a method puts everything it creates."""
    return next(model.parameters()).device


def bf16_autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """CUDA bf16 autocast for a block of model passes when ``enabled``, else a no-op.

    The logits are upcast to fp32 before any loss (:func:`solvers.lm.token_losses`), so losses and the gradients
    that reach fp32 parameters keep fp32 precision.
    """
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def check_autocast(enabled: bool, device: torch.device, who: str) -> None:
    """Refuse bf16 autocast off CUDA before any work: CPU autocast would silently change every result.

    Raises:
        ValueError: ``enabled`` and ``device`` is not a CUDA device, naming ``who`` (the config key's owner).
    """
    if enabled and device.type != "cuda":
        raise ValueError(f"{who}: autocast_bf16 needs a CUDA model, got one on {device}; set autocast_bf16=false")


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices ``torch.random.fork_rng`` must save and restore for a model on ``device``.

    A method seeds its own stream (``torch.manual_seed`` seeds every device); without forking the CUDA generator
    too, dropout on a GPU would move the caller's CUDA stream.
    """
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
