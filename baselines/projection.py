"""Seeded Rademacher random projection, generated block by block so memory stays bounded (LESS step 2).

The matrix Π ∈ {±1}^{D×d} is *defined* block-wise: rows ``[b·128, (b+1)·128)`` come from a ``torch.Generator``
on the features' device seeded with a hash of ``(seed, b)``. So the same seed gives the same Π in any chunking
and on any machine with the same kind of device, and :meth:`RademacherProjector.project` only ever materialises
``chunk_rows × d`` entries of it (plus the output), where the features are: drawing Π on the host and copying it
to a GPU for every chunk would cost more than the projection. The CPU and CUDA generators draw different bits,
so a CPU run's scores and a GPU run's are not comparable entry by entry (they are not under bf16 autocast
either). Projections are scaled by ``1/sqrt(d)`` so inner products are preserved in expectation
(Johnson–Lindenstrauss).

``make_projector(kind="auto")`` uses TRAK's ``CudaProjector`` (the ``fast_jl`` kernel LESS uses) when the
``traker`` package imports and the data live on a CUDA device, else the torch projector. The two do not
draw the same matrix, so scores from different projector kinds are not comparable. The TRAK path is untested
here.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

BLOCK_ROWS = 128
"""Rows of Π drawn from one generator seed; fixed, because it is part of the matrix's definition."""


class Projector(Protocol):
    """Maps ``[B, dim_in]`` features to ``[B, dim_out]``."""

    dim_in: int
    dim_out: int

    def project(self, x: torch.Tensor) -> torch.Tensor: ...


def _block_seed(seed: int, block: int) -> int:
    # splitmix-style mix so neighbouring (seed, block) pairs get unrelated generator streams
    z = (seed * 0x9E3779B97F4A7C15 + block * 0xBF58476D1CE4E5B9 + 1) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0x94D049BB133111EB) % (1 << 64)
    return (z ^ (z >> 31)) % (1 << 63)


class RademacherProjector:
    """x ↦ x Π / sqrt(d) with a seeded ±1 matrix Π generated in chunks of ``chunk_rows`` rows.

    Args:
        dim_in: D, the feature width (number of LoRA parameters).
        dim_out: d, the projected width.
        seed: defines Π; the same seed always gives the same matrix.
        chunk_rows: rows of Π resident at once; rounded up to a multiple of 128. Peak extra memory is about
            ``chunk_rows · d · 4`` bytes (plus a quarter of that while a block is drawn).
    """

    def __init__(self, dim_in: int, dim_out: int, seed: int = 0, chunk_rows: int = 1024) -> None:
        if dim_in < 1 or dim_out < 1 or chunk_rows < 1:
            raise ValueError(
                f"dim_in, dim_out and chunk_rows must be >= 1, got {dim_in}, {dim_out}, {chunk_rows}"
            )
        self.dim_in, self.dim_out, self.seed = dim_in, dim_out, seed
        self.chunk_rows = min(
            math.ceil(chunk_rows / BLOCK_ROWS) * BLOCK_ROWS, math.ceil(dim_in / BLOCK_ROWS) * BLOCK_ROWS
        )

    @property
    def chunk_bytes(self) -> int:
        """Size in bytes of the largest slice of Π this projector materialises (fp32)."""
        return min(self.chunk_rows, self.dim_in) * self.dim_out * 4

    def rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows ``[start, stop)`` of Π as an fp32 tensor of ±1 drawn on ``device`` (``start`` must be a multiple
        of 128)."""
        if start % BLOCK_ROWS:
            raise ValueError(f"start must be a multiple of {BLOCK_ROWS}, got {start}")
        out = torch.empty(stop - start, self.dim_out, device=device)
        for lo in range(start, stop, BLOCK_ROWS):
            hi = min(stop, lo + BLOCK_ROWS)
            gen = torch.Generator(device=device).manual_seed(_block_seed(self.seed, lo // BLOCK_ROWS))
            bits = torch.randint(0, 2, (hi - lo, self.dim_out), generator=gen, dtype=torch.int8, device=device)
            out[lo - start : hi - start] = bits
        return out.mul_(2).sub_(1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Π / sqrt(d)`` for ``x`` of shape ``[B, dim_in]``, computed chunk by chunk in fp32."""
        if x.dim() != 2 or x.size(1) != self.dim_in:
            raise ValueError(f"expected features of shape [B, {self.dim_in}], got {tuple(x.shape)}")
        out = torch.zeros(x.size(0), self.dim_out, device=x.device)
        for start in range(0, self.dim_in, self.chunk_rows):
            stop = min(self.dim_in, start + self.chunk_rows)
            out.addmm_(x[:, start:stop].float(), self.rows(start, stop, x.device))
        return out.div_(math.sqrt(self.dim_out))


class _TrakProjector:
    """Adapter over ``trak.projectors.CudaProjector`` (Rademacher, fast_jl); only built when it imports."""

    def __init__(self, dim_in: int, dim_out: int, seed: int, device: torch.device) -> None:
        from trak.projectors import CudaProjector, ProjectionType  # optional: pip install traker[fast]

        self.dim_in, self.dim_out = dim_in, dim_out
        self._proj = CudaProjector(
            grad_dim=dim_in,
            proj_dim=dim_out,
            seed=seed,
            proj_type=ProjectionType.rademacher,
            device=device,
            max_batch_size=8,
        )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self._proj.project(x, model_id=0).float() / math.sqrt(self.dim_out)


def make_projector(
    dim_in: int,
    dim_out: int,
    seed: int,
    chunk_rows: int,
    device: torch.device,
    kind: Literal["auto", "torch"] = "auto",
) -> Projector:
    """TRAK's CUDA projector when ``kind="auto"``, it imports and ``device`` is CUDA; else the torch one."""
    if kind == "auto" and device.type == "cuda":
        try:
            return _TrakProjector(dim_in, dim_out, seed, device)
        except Exception:  # noqa: BLE001 - any failure of the optional kernel falls back to the exact torch path
            pass
    return RademacherProjector(dim_in, dim_out, seed, chunk_rows)
