"""In-memory tokenized examples, what tokenizing them cost, and a resumable per-source batch sampler.

The solver and the baselines consume these plain objects; `curate` builds them from DuckDB. A row whose
response is truncated away has no label tokens: it is left out of the set (and counted in its
:class:`TokenStats`), so no mean over rows (per-source losses, scores, evaluation losses) is diluted by rows
that carry no signal. The sampler is
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

from solvers.lm import Encoded, collate, encode_example


@dataclass(frozen=True)
class TokenStats:
    """What tokenization did to one source's rows (token lengths are before truncation)."""

    rows: int
    truncated: int
    no_labels: int
    median_len: float
    p95_len: float
    max_len: int

    @property
    def usable(self) -> int:
        """Rows that keep at least one label token (the only rows any loss or score is computed on)."""
        return self.rows - self.no_labels

    @property
    def no_label_share(self) -> float:
        return self.no_labels / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "truncated": self.truncated, "no_labels": self.no_labels,
                "usable": self.usable, "median_len": self.median_len, "p95_len": self.p95_len,
                "max_len": self.max_len}


def token_stats(encoded: Sequence[Encoded], max_len: int) -> TokenStats:
    """Summarise a group of encoded rows (rows, truncated, no label tokens, median/p95 untruncated length)."""
    return stats_of(np.asarray([e.length for e in encoded], dtype=np.int64),
                    np.asarray([e.truncated for e in encoded], dtype=bool),
                    np.asarray([e.n_labels == 0 for e in encoded], dtype=bool), max_len)


def stats_of(lengths: np.ndarray, truncated: np.ndarray, no_labels: np.ndarray, max_len: int) -> TokenStats:
    """:func:`token_stats` from per-row arrays (what a streamed pass keeps instead of the encodings)."""
    pct = np.percentile(lengths.astype(np.float64), [50, 95]) if len(lengths) else np.zeros(2)
    return TokenStats(rows=len(lengths), truncated=int(truncated.sum()), no_labels=int(no_labels.sum()),
                      median_len=float(pct[0]), p95_len=float(pct[1]), max_len=max_len)


@dataclass
class TokenizedSet:
    """Tokenized examples with their source index; ``sources`` names the index values in order."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    source_ids: np.ndarray
    sources: list[str]
    example_ids: list[str] = field(default_factory=list)
    pad_id: int = 0
    stats: dict[str, TokenStats] = field(default_factory=dict)
    """Per source name (and ``"all"``): what tokenization did, dropped rows included."""

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Collated tensors for the rows ``idx`` plus their ``source_ids``, on the host (the caller moves them)."""
        out = collate([(self.input_ids[i], self.labels[i]) for i in idx], self.pad_id)
        out["source_ids"] = torch.as_tensor(self.source_ids[np.asarray(idx, dtype=np.int64)], dtype=torch.long,
                                            device="cpu")
        return out

    def counts(self) -> np.ndarray:
        """Number of examples per source, in ``sources`` order."""
        return np.bincount(self.source_ids, minlength=len(self.sources))


def tokenize_rows(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], source_ids: Sequence[int],
                  sources: list[str], max_len: int, template: str = "auto",
                  example_ids: Sequence[str] | None = None, truncation: str = "keep_response") -> TokenizedSet:
    """Tokenize prompt/response pairs into a :class:`TokenizedSet` with response-only labels.

    Rows left with no label token (see :func:`solvers.lm.encode_example`) are dropped; ``stats`` counts them per
    source so the caller can warn or refuse.
    """
    encoded = [encode_example(tokenizer, p, r, max_len, template, truncation)
               for p, r in zip(prompts, responses, strict=True)]
    src = np.asarray(source_ids, dtype=np.int64)
    stats = {name: token_stats([e for e, s in zip(encoded, src, strict=True) if s == k], max_len)
             for k, name in enumerate(sources)}
    stats["all"] = token_stats(encoded, max_len)
    keep = [i for i, e in enumerate(encoded) if e.n_labels > 0]
    ids = list(example_ids or [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return TokenizedSet([encoded[i].ids for i in keep], [encoded[i].labels for i in keep], src[keep],
                        list(sources), [ids[i] for i in keep] if ids else [], int(pad), stats)


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
        dtype = row_dtype(len(data))
        groups = [np.flatnonzero(data.source_ids == s).astype(dtype) for s in range(k)] if mode == "stratified" \
            else [np.arange(len(data), dtype=dtype)]
        self.groups = [g for g in groups]
        self.perm_states: list[dict[str, Any] | None] = [None for _ in self.groups]
        """The generator's state just before each group's current permutation was drawn: the permutation is
        recomputed from it on resume, so a state dict holds a few numbers per source instead of every row index
        (4.2M rows were ~150 MB of Python ints in each checkpoint). None for a permutation restored from an old
        state dict that saved the permutations themselves."""
        self.perms = [self._permute(g) for g in range(len(self.groups))]
        self.pos = [0] * len(self.groups)
        self.step = 0

    def _permute(self, g: int) -> np.ndarray:
        """A fresh permutation of group ``g`` from the shared generator, remembering the state it started from."""
        self.perm_states[g] = dict(self.rng.bit_generator.state)
        return self.rng.permutation(self.groups[g])

    def _take(self, g: int, n: int) -> list[int]:
        out: list[int] = []
        if len(self.groups[g]) == 0:
            return out
        mask = getattr(self.data, "label_mask", None)  # a streamed set: step over rows with no label token
        passed = 0
        while len(out) < n:
            if self.pos[g] >= len(self.perms[g]):
                self.perms[g] = self._permute(g)
                self.pos[g] = 0
            take = min(n - len(out), len(self.perms[g]) - self.pos[g])
            chunk = self.perms[g][self.pos[g] : self.pos[g] + take]
            self.pos[g] += take
            passed += take
            if mask is not None:
                chunk = chunk[mask(chunk)]
                if not out and passed > 2 * len(self.groups[g]):  # two passes saw every row
                    name = self.data.sources[int(self.data.source_ids[self.groups[g][0]])]
                    raise ValueError(f"source {name!r}: no row keeps a label token at max_len "
                                     f"{getattr(self.data, 'max_len', '?')}")
            out.extend(int(i) for i in chunk)
        return out

    @property
    def samples_groups(self) -> bool:
        """Stratified over more sources (groups) than rows per batch: each batch takes one row from each of
        ``batch_size`` groups drawn at random without replacement, so a group is in a batch with probability
        ``batch_size / K`` (see :attr:`group_scale`)."""
        return self.mode == "stratified" and len(self.groups) > self.batch_size

    @property
    def group_scale(self) -> float:
        """``K / batch_size`` when groups are sampled (else 1): the inverse inclusion probability by which the
        batch's per-source sums are multiplied so that Σ_s p_s ℓ̄_s stays unbiased (Horvitz-Thompson)."""
        return len(self.groups) / self.batch_size if self.samples_groups else 1.0

    def next_indices(self) -> list[int]:
        """Row indices of the next batch."""
        g = len(self.groups)
        if self.samples_groups:
            picked = sorted(int(j) for j in self.rng.choice(g, self.batch_size, replace=False))
            self.step += 1
            return [i for j in picked for i in self._take(j, 1)]
        base, extra = divmod(self.batch_size, g)
        idx: list[int] = []
        for j in range(g):
            n = base + (1 if (j - self.step) % g < extra else 0)
            idx.extend(self._take(j, n))
        self.step += 1
        return idx

    def next(self) -> dict[str, torch.Tensor]:
        """The next collated batch (with ``source_ids``; with sampled groups also ``group_scale``)."""
        out = self.data.batch(self.next_indices())
        if self.samples_groups:
            out["group_scale"] = torch.tensor(self.group_scale, dtype=torch.float64)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same stream of batches: the generator, and per group the state
        its current permutation was drawn from (not the permutation itself, which grows with the pool). After
        resuming from a state dict that held the permutations, they are saved as they were until redrawn."""
        state: dict[str, Any] = {"rng": self.rng.bit_generator.state, "pos": list(self.pos), "step": self.step}
        if all(st is not None for st in self.perm_states):
            state["perm_states"] = [dict(st) for st in self.perm_states if st is not None]
        else:
            state["perms"] = [p.tolist() for p in self.perms]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict` (either form)."""
        if "perm_states" in state:
            for g, st in enumerate(state["perm_states"]):
                self.rng.bit_generator.state = st
                self.perms[g] = self._permute(g)
        else:
            dtype = row_dtype(len(self.data))
            self.perms = [np.asarray(p, dtype=dtype) for p in state["perms"]]
            self.perm_states = [None for _ in self.perms]
        self.rng.bit_generator.state = state["rng"]
        self.pos = list(state["pos"])
        self.step = int(state["step"])


def row_dtype(n: int) -> type[np.signedinteger]:
    """The smallest of int32 and int64 that holds row positions below ``n``: per-row index arrays of a pool of
    millions of rows take half the memory (the values, and so every draw, are the same)."""
    return np.int32 if n < 2**31 else np.int64
