"""Atomic writes for curate: a crash never leaves a half-written file or folder that looks complete.

The writer itself is :mod:`solvers.common.io` (one implementation for the whole project, at the bottom layer so that
solvers, baselines and evals use it too): temporary name in the destination's folder, synced, renamed into place,
the folder synced after, with the modes the umask gives an ordinary write. This module re-exports it and adds
:func:`sha256_file`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from solvers.common.io import atomic_dir, atomic_path, write_bytes, write_json, write_text

__all__ = ["atomic_dir", "atomic_path", "sha256_file", "write_bytes", "write_json", "write_text"]


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
