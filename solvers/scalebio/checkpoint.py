"""Resumable checkpoints of a ScaleBiO run: one file, written atomically.
 The file holds everything a run's future depends on: u, w, λ, the three optimizer states, the step (from
which the schedule and α stage follow), torch's RNG states, the LISA generator and draw, both samplers' state
dicts (their numpy generators included) and the trajectory so far. It is written through
:func:`solvers.common.io.atomic_path` (a temporary file in the same folder, synced and moved over the old one), so a
crash at any moment leaves either the previous checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from solvers.common.io import atomic_path

FILENAME = "scalebio.pt"
# Fields that may change between the interrupted and the resumed run without changing its result.
RESUME_FREE = frozenset({"checkpoint_every"})


def path(directory: str | os.PathLike[str]) -> Path:
    """Where the checkpoint of ``directory`` lives."""
    return Path(directory) / FILENAME


def save(directory: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` as the checkpoint of ``directory`` (created if needed)."""
    target = path(directory)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def load(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the checkpoint of ``directory`` onto the CPU (tensors and plain Python only:
    ``weights_only=True``).

    Loading into models and optimizers then moves each tensor to its parameter's device.

    Raises:
        FileNotFoundError: ``directory`` holds no checkpoint.
    """
    target = path(directory)
    if not target.exists():
        raise FileNotFoundError(f"no ScaleBiO checkpoint at {target}; run without resume=True to start")
    return torch.load(target, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """torch's CPU RNG state and, if CUDA is initialised, every device's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of config fields that differ between a checkpoint and the resuming run (ignoring harmless
    ones)."""
    keys = (saved.keys() | current.keys()) - RESUME_FREE
    return sorted(k for k in keys if saved.get(k) != current.get(k))
