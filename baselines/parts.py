"""Whole-pool passes that survive a kill: each chunk's result is a Parquet file the moment it is done.

LESS and RHO score every row of the pool; on millions of rows that is hours. :class:`Parts` keeps one small
Parquet file per finished chunk (``<key>-<start>.parquet``, written under a temporary name and renamed), so a run
that is killed and resumed (``curate reweight --resume RUN``) recomputes only the chunks that were not finished,
and the results never all sit in memory twice. :func:`save_state` / :func:`load_state` do the same for the
state a pass depends on (RHO's reference model, LESS's warmup checkpoints), so a resumed pass scores against
exactly the same models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from solvers.common.io import atomic_path


class Parts:
    """Chunks of a pass keyed by their first row; ``folder=None`` keeps nothing (a plain, unresumable pass)."""

    def __init__(self, folder: Path | None, key: str) -> None:
        self.folder, self.key = folder, key
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, start: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.key}-{start:012d}.parquet"

    def has(self, start: int) -> bool:
        """Whether the chunk starting at ``start`` is stored."""
        return self.folder is not None and self._path(start).exists()

    def get(self, start: int) -> np.ndarray | None:
        """The stored values of the chunk starting at ``start`` (``[rows, ...]`` float64), or None."""
        if self.folder is None or not self._path(start).exists():
            return None
        table = pq.read_table(self._path(start))
        shape = tuple(int(x) for x in table.schema.metadata[b"shape"].decode().split(","))
        return np.asarray(table.column("value").to_numpy(), dtype=np.float64).reshape(shape)

    def put(self, start: int, values: torch.Tensor | np.ndarray) -> None:
        """Store a finished chunk's values (atomically: a kill leaves the chunk absent, never half written)."""
        if self.folder is None:
            return
        arr = (values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor)
               else np.asarray(values, dtype=np.float64))
        table = pa.table({"value": arr.reshape(-1)}).replace_schema_metadata(
            {"shape": ",".join(str(d) for d in arr.shape)})
        with atomic_path(self._path(start)) as tmp:
            pq.write_table(table, tmp)


def save_state(folder: Path | None, name: str, state: Any) -> None:
    """``torch.save`` ``state`` as ``folder/name`` atomically (nothing when ``folder`` is None)."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / name) as tmp:
        torch.save(state, tmp)


def load_state(folder: Path | None, name: str) -> Any:
    """What :func:`save_state` stored, or None."""
    if folder is None or not (folder / name).exists():
        return None
    return torch.load(folder / name, map_location="cpu", weights_only=False)
