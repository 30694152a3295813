"""In-memory tokenized examples and a resumable per-source batch sampler.

The solver and the baselines consume these plain objects; `curate` builds them from DuckDB. The sampler is
stratified by default (every source in every batch, ALGORITHMS.md pitfall 7) or proportional to source size (the
authors' behaviour: uniform over the concatenation). Its whole position is a small JSON-able state dict, so a
resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from solvers.lm import collate, encode_example


@dataclass
class TokenizedSet:
    """Tokenized examples with their source index; ``sources`` names the index values in order."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    source_ids: np.ndarray
    sources: list[str]
    example_ids: list[str] = field(default_factory=list)
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Collated tensors for the rows ``idx`` plus their ``source_ids``."""
        out = collate([(self.input_ids[i], self.labels[i]) for i in idx], self.pad_id)
        out["source_ids"] = torch.as_tensor(self.source_ids[np.asarray(idx, dtype=np.int64)], dtype=torch.long)
        return out

    def counts(self) -> np.ndarray:
        """Number of examples per source, in ``sources`` order."""
        return np.bincount(self.source_ids, minlength=len(self.sources))


def tokenize_rows(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], source_ids: Sequence[int],
                  sources: list[str], max_len: int, template: str = "auto",
                  example_ids: Sequence[str] | None = None) -> TokenizedSet:
    """Tokenize prompt/response pairs into a :class:`TokenizedSet` with response-only labels."""
    ids, labels = [], []
    for p, r in zip(prompts, responses, strict=True):
        i, lab = encode_example(tokenizer, p, r, max_len, template)
        ids.append(i)
        labels.append(lab)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return TokenizedSet(ids, labels, np.asarray(source_ids, dtype=np.int64), list(sources),
                        list(example_ids or []), int(pad))


class SourceSampler:
    """Draws batches of row indices from a :class:`TokenizedSet`, without replacement within an epoch.

    ``mode="stratified"`` takes ``batch_size // K`` rows from every source (the remainder spread over sources in a
    rotating order); ``mode="proportional"`` draws uniformly over all rows. Each source (or the whole pool) is walked
    in a fresh seeded permutation per epoch.
    """

    def __init__(self, data: TokenizedSet, batch_size: int, seed: int,
                 mode: Literal["stratified", "proportional"] = "stratified") -> None:
        self.data, self.batch_size, self.mode = data, batch_size, mode
        self.rng = np.random.default_rng(seed)
        k = len(data.sources)
        groups = [np.flatnonzero(data.source_ids == s) for s in range(k)] if mode == "stratified" else [
            np.arange(len(data))]
        self.groups = [g for g in groups]
        self.perms = [self.rng.permutation(g) for g in self.groups]
        self.pos = [0] * len(self.groups)
        self.step = 0

    def _take(self, g: int, n: int) -> list[int]:
        out: list[int] = []
        if len(self.groups[g]) == 0:
            return out
        while len(out) < n:
            if self.pos[g] >= len(self.perms[g]):
                self.perms[g] = self.rng.permutation(self.groups[g])
                self.pos[g] = 0
            take = min(n - len(out), len(self.perms[g]) - self.pos[g])
            out.extend(int(i) for i in self.perms[g][self.pos[g] : self.pos[g] + take])
            self.pos[g] += take
        return out

    def next_indices(self) -> list[int]:
        """Row indices of the next batch."""
        g = len(self.groups)
        base, extra = divmod(self.batch_size, g)
        idx: list[int] = []
        for j in range(g):
            n = base + (1 if (j - self.step) % g < extra else 0)
            idx.extend(self._take(j, n))
        self.step += 1
        return idx

    def next(self) -> dict[str, torch.Tensor]:
        """The next collated batch (with ``source_ids``)."""
        return self.data.batch(self.next_indices())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same stream of batches."""
        return {"rng": self.rng.bit_generator.state, "perms": [p.tolist() for p in self.perms],
                "pos": list(self.pos), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.perms = [np.asarray(p, dtype=np.int64) for p in state["perms"]]
        self.pos = list(state["pos"])
        self.step = int(state["step"])
