"""A pool tokenized on demand: rows are encoded when a batch asks for them, never all at once.

A pool of millions of rows held as token lists costs more memory than the model (4M rows x 128 tokens is ~14 GB of
Python ints), while ScaleBiO and DoReMi only ever touch ``steps x batch_size`` of them. :class:`StreamedSet` has
the interface of :class:`solvers.data.TokenizedSet` (``sources``, ``source_ids``, ``example_ids``, ``batch``,
``counts``, ``pad_id``, ``stats``) but keeps only two small integers per row (int32); the text comes from ``fetch`` (in
`curate`, an Arrow snapshot of the store on disk) and the encodings of recent rows from a bounded cache.

Two differences from the in-memory set, both deliberate:

- Rows whose response is truncated away are not known until they are encoded, so they stay in the set and
  :meth:`StreamedSet.label_mask` tells the sampler to step over them (:class:`solvers.data.SourceSampler` does).
  A method that needs every row anyway (LESS features, RHO scores) calls :meth:`StreamedSet.usable` first: one
  streamed pass that drops them and counts exactly.
- ``stats`` are estimated from a seeded sample of each source until :meth:`usable` has made them exact; their
  ``rows`` are always exact.

With no label-less rows, a streamed set yields exactly the batches of the in-memory set built from the same rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from solvers.data import TokenStats, row_dtype, stats_of, token_stats
from solvers.lm import Encoded, collate, encode_example

Fetch = Callable[[np.ndarray], tuple[list[str], list[str]]]
"""Prompts and responses of the stored rows ``idx`` (positions in the underlying pool), in that order."""
FetchIds = Callable[[np.ndarray], list[str]]
CACHE_ROWS = 65_536
"""Encodings kept for reuse: a batch's rows are encoded once for the label check and once for the batch."""
CHUNK = 4_096
"""Rows fetched and encoded per round trip in a streamed pass."""
STATS_SAMPLE = 1_000
"""Rows per source encoded to estimate ``stats`` (the share of label-less rows to about ±3 points at 95%)."""


class StreamedSet:
    """Tokenized examples encoded on demand from ``fetch``; see the module docstring."""

    def __init__(self, fetch: Fetch, source_ids: np.ndarray, sources: list[str], tokenizer: Any, max_len: int,
                 template: str = "auto", truncation: str = "keep_response", *, fetch_ids: FetchIds | None = None,
                 index: np.ndarray | None = None, stats: dict[str, TokenStats] | None = None,
                 exact: bool = False) -> None:
        self.fetch, self.fetch_ids = fetch, fetch_ids
        # int32 rather than int64 (as long as the pool has under 2**31 rows): these two arrays are all a streamed
        # set holds per row, so they set how its memory grows with the pool (batch() still gives int64 tensors)
        self.source_ids = np.asarray(source_ids, dtype=np.int32)
        self.index = (np.arange(len(self.source_ids), dtype=row_dtype(len(self.source_ids))) if index is None
                      else np.asarray(index))  # a derived set's index keeps its pool's dtype
        self.sources = list(sources)
        self.tokenizer, self.max_len, self.template, self.truncation = tokenizer, max_len, template, truncation
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.pad_id = int(pad)
        self.exact = exact
        """True once every row is known to carry a label token (:meth:`usable`)."""
        self._cache: OrderedDict[int, Encoded] = OrderedDict()
        self.stats = stats if stats is not None else self.estimate_stats()

    def __len__(self) -> int:
        return len(self.source_ids)

    def counts(self) -> np.ndarray:
        """Rows per source, in ``sources`` order (label-less rows included until :meth:`usable`)."""
        return np.bincount(self.source_ids, minlength=len(self.sources))

    def encoded(self, idx: Sequence[int] | np.ndarray) -> list[Encoded]:
        """The encodings of rows ``idx`` (positions in this set), fetched and encoded in one round trip."""
        idx = [int(i) for i in idx]
        missing = sorted({i for i in idx if i not in self._cache})
        if missing:
            for i, e in zip(missing, self._encode(np.asarray(missing, dtype=np.int64)), strict=True):
                self._cache[i] = e
        out = []
        for i in idx:
            self._cache.move_to_end(i)
            out.append(self._cache[i])
        while len(self._cache) > CACHE_ROWS:
            self._cache.popitem(last=False)
        return out

    def label_mask(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Whether each of rows ``idx`` keeps a label token (the sampler steps over those that do not)."""
        if self.exact:
            return np.ones(len(idx), dtype=bool)
        return np.asarray([e.n_labels > 0 for e in self.encoded(idx)], dtype=bool)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Collated tensors for the rows ``idx`` plus their ``source_ids``, on the host."""
        out = collate([(e.ids, e.labels) for e in self.encoded(idx)], self.pad_id)
        out["source_ids"] = torch.as_tensor(self.source_ids[np.asarray(idx, dtype=np.int64)], dtype=torch.long,
                                            device="cpu")
        return out

    @property
    def example_ids(self) -> _Ids:
        return _Ids(self)

    def subset(self, rows: Sequence[int] | np.ndarray) -> StreamedSet:
        """The rows ``rows`` as a streamed set of their own (LESS's warmup subset), without ``stats``."""
        return self._derive(np.asarray(rows, dtype=np.int64))

    def usable(self, on_chunk: Callable[[int, int], None] | None = None) -> StreamedSet:
        """The set without its label-less rows and with exact ``stats``: one streamed pass over every row.

        For the methods that visit every row anyway (LESS, RHO); ``on_chunk(done, total)`` reports progress.
        """
        if self.exact:
            return self
        n = len(self)
        lengths, truncated, no_labels = np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
        for start, enc in self.iter_encoded():
            end = start + len(enc)
            lengths[start:end] = [e.length for e in enc]
            truncated[start:end] = [e.truncated for e in enc]
            no_labels[start:end] = [e.n_labels == 0 for e in enc]
            if on_chunk is not None:
                on_chunk(end, n)
        stats = {name: stats_of(lengths[m], truncated[m], no_labels[m], self.max_len)
                 for k, name in enumerate(self.sources) for m in [self.source_ids == k]}
        stats["all"] = stats_of(lengths, truncated, no_labels, self.max_len)
        out = self._derive(np.flatnonzero(~no_labels))
        out.stats, out.exact = stats, True
        return out

    def iter_encoded(self, chunk: int = CHUNK) -> Iterator[tuple[int, list[Encoded]]]:
        """Every row's encoding in order, ``chunk`` rows at a time, bypassing the cache."""
        for start in range(0, len(self), chunk):
            yield start, self._encode(np.arange(start, min(start + chunk, len(self)), dtype=np.int64))

    def estimate_stats(self, per_source: int = STATS_SAMPLE, seed: int = 0) -> dict[str, TokenStats]:
        """Per-source statistics from a seeded sample of at most ``per_source`` rows each, scaled to the source's
        row count (``rows`` exact; ``truncated`` and ``no_labels`` estimates)."""
        rng = np.random.default_rng(seed)
        stats: dict[str, TokenStats] = {}
        samples: list[Encoded] = []
        for k, name in enumerate(self.sources):
            rows = np.flatnonzero(self.source_ids == k)
            pick = np.sort(rng.choice(rows, per_source, replace=False)) if len(rows) > per_source else rows
            enc = self._encode(pick) if len(pick) else []
            samples += enc
            stats[name] = _scaled(token_stats(enc, self.max_len), len(rows))
        stats["all"] = _scaled(token_stats(samples, self.max_len), len(self))
        return stats

    def _encode(self, idx: np.ndarray) -> list[Encoded]:
        prompts, responses = self.fetch(self.index[idx])
        return [encode_example(self.tokenizer, p or "", r or "", self.max_len, self.template, self.truncation)
                for p, r in zip(prompts, responses, strict=True)]

    def _derive(self, rows: np.ndarray) -> StreamedSet:
        return StreamedSet(self.fetch, self.source_ids[rows], self.sources, self.tokenizer, self.max_len,
                           self.template, self.truncation, fetch_ids=self.fetch_ids, index=self.index[rows],
                           stats={}, exact=self.exact)

    def ids_of(self, idx: Sequence[int] | np.ndarray) -> list[str]:
        """The example ids of rows ``idx`` (their positions when the store gave none)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.fetch_ids is None:
            return [str(i) for i in idx]
        return self.fetch_ids(self.index[idx])


def _scaled(st: TokenStats, rows: int) -> TokenStats:
    """A sample's statistics scaled to ``rows`` rows (the shares kept, the lengths as measured); a sample whose
    rows all lost their labels says so for every row, never rounds to "some usable"."""
    f = rows / st.rows if st.rows else 0.0
    no_labels = rows if st.rows and st.no_labels == st.rows else round(st.no_labels * f)
    return TokenStats(rows, round(st.truncated * f), no_labels, st.median_len, st.p95_len, st.max_len)


class _Ids:
    """``set.example_ids[i]`` on a streamed set, fetched on access."""

    def __init__(self, data: StreamedSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data) if self.data.fetch_ids is not None else 0

    def __getitem__(self, i: int) -> str:
        return self.data.ids_of([i])[0]
