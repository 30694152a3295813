"""Turn source weights into a dataset of a fixed budget: allocation, then a deterministic draw.

``allocate`` is largest-remainder apportionment, so every source gets its exact share rounded up or down by less
than one row and the total is the budget. A source asked for more rows than it has is repeated in whole passes plus
a random remainder (extra epochs over it, as the ScaleBiO resampler does), unless ``max_epochs`` caps repeats and
the rest is redistributed over the other sources in proportion to their weights (UniMax-style water filling).
``draw`` walks each source in a seeded permutation (or by descending score for example-level methods).

``check_budget`` and ``check_budget_fits`` are the guards every caller runs first: the draw holds every drawn id in
memory (about ``BYTES_PER_ROW`` bytes a row), so a budget of 10**12 must be refused in one line, not by the OS killing
the process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np

from curate.errors import ConfigError, DataError

MAX_PASSES = 100
"""Without ``--max-epochs`` a budget may repeat the weighted sources' pool at most this many times over."""
MAX_ROWS = 50_000_000
"""The most rows one resample draws, whatever ``--max-epochs`` allows (about 5 GB of memory at ``BYTES_PER_ROW``)."""
BYTES_PER_ROW = 100
"""Peak memory per drawn row, measured on the draw plus its Arrow table (ids, pass numbers, the shuffle)."""


def check_budget(budget: int, flag: str = "--budget") -> int:
    """Refuse a budget that would replace a run's draw with nothing, before anything is opened or read.

    Returns the budget.

    Raises:
        ConfigError: not a whole number, or below 1, naming ``flag``.
    """
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ConfigError(f"{flag}: must be a whole number of rows, got {budget!r}")
    if budget < 1:
        raise ConfigError(f"{flag} {budget}: must be at least 1 (the number of rows to draw); a run's existing "
                          "data/ is kept")
    return budget


def check_budget_fits(budget: int, pool_rows: int | None, max_epochs: float | None = None,
                      flag: str = "--budget") -> int:
    """Refuse a budget that would exhaust memory, before any id is read (the OS would kill the process instead).

    Rules (also in ``curate resample --help``): :func:`check_budget`; at most :data:`MAX_ROWS` rows; and, without
    ``max_epochs``, at most :data:`MAX_PASSES` times ``pool_rows`` (the rows of the sources with a positive
    weight), since a budget that large is almost always a typo; ``--max-epochs E`` states the repeats wanted and
    :func:`allocate` then enforces them. ``pool_rows=None`` (the pool is not known yet: ``reweight`` before
    training) checks the ceiling only. Returns the budget.

    Raises:
        ConfigError: naming ``flag``, the rows asked for, the rows the pool holds and the fix.
    """
    check_budget(budget, flag)
    pool = "" if pool_rows is None else f" from a pool of {pool_rows:,} rows (the weighted sources)"
    if budget > MAX_ROWS:
        gb = budget * BYTES_PER_ROW / 1e9
        raise ConfigError(f"{flag} {budget:,}: would draw {budget:,} rows{pool}, about {gb:,.0f} GB of memory; "
                          f"one resample draws at most {MAX_ROWS:,} rows, lower {flag}")
    if pool_rows and max_epochs is None and budget > MAX_PASSES * pool_rows:
        raise ConfigError(f"{flag} {budget:,}: would draw {budget:,} rows{pool}, {budget / pool_rows:,.0f} passes "
                          f"over it (more than {MAX_PASSES}); lower {flag}, or pass --max-epochs E to allow up to "
                          "E passes over each source")
    return budget


def _largest_remainder(shares: Mapping[str, float], total: int, weights: Mapping[str, float]) -> dict[str, int]:
    floors = {s: math.floor(q) for s, q in shares.items()}
    left = total - sum(floors.values())
    order = sorted(shares, key=lambda s: (-(shares[s] - floors[s]), -weights[s], s))
    for s in order[:left]:
        floors[s] += 1
    return floors


def allocate(weights: Mapping[str, float], budget: int, available: Mapping[str, int],
             max_epochs: float | None = None) -> dict[str, int]:
    """Rows per source for a budget; sums to ``budget``.

    Args:
        weights: source -> weight on the simplex.
        budget: total rows wanted.
        available: source -> rows stored (only needed with ``max_epochs`` or to refuse empty sources).
        max_epochs: cap each source at ``floor(max_epochs * available)`` rows and redistribute the excess.

    Raises:
        DataError: a negative budget, a weighted source with no rows, or a cap that cannot hold the budget.
    """
    if budget < 0:
        raise DataError(f"--budget: must be >= 0, got {budget}")
    active = {s: float(w) for s, w in weights.items() if w > 0}
    empty = [s for s in active if available.get(s, 0) <= 0]
    if empty:
        raise DataError(f"source {empty[0]!r} has weight {weights[empty[0]]:.4g} but no training rows; "
                        "ingest rows for it or drop it from the weights")
    out = {s: 0 for s in weights}
    if max_epochs is None:
        total_w = sum(active.values())
        out.update(_largest_remainder({s: budget * w / total_w for s, w in active.items()}, budget, active))
        return out
    if max_epochs <= 0:
        raise DataError(f"--max-epochs: must be > 0, got {max_epochs}")
    caps = {s: math.floor(max_epochs * available[s]) for s in active}
    if sum(caps.values()) < budget:
        raise DataError(f"--budget {budget} exceeds what --max-epochs {max_epochs:g} allows ({sum(caps.values())} "
                        "rows); raise --max-epochs or lower --budget")
    free, left = dict(active), budget
    while True:  # water filling: fix sources whose share exceeds their cap, share the rest again
        total_w = sum(free.values())
        shares = {s: left * w / total_w for s, w in free.items()}
        over = [s for s, q in shares.items() if q > caps[s]]
        if not over:
            break
        for s in over:
            out[s] = caps[s]
            left -= caps[s]
            del free[s]
    out.update(_largest_remainder(shares, left, free))
    return out


def source_rng(seed: int, source: str) -> np.random.Generator:
    """A generator that depends only on the seed and the source name, not on the order sources are visited."""
    key = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def draw(ids: Mapping[str, list[str]], allocation: Mapping[str, int], seed: int,
         scores: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Pick rows per source: whole passes plus a remainder; returns (sources, example_ids, draw) shuffled.

    ``ids[source]`` must be in a stable order (sorted ids). ``draw`` is the pass number of each row (0 = first
    use). With ``scores`` a source is walked best-first instead of in a random order.
    """
    out_src: list[str] = []
    out_ids: list[str] = []
    out_draw: list[np.ndarray] = []
    for source in sorted(allocation):
        k = allocation[source]
        if k == 0:
            continue
        pool = np.asarray(ids[source], dtype=object)
        n, rng = len(pool), source_rng(seed, source)
        passes, rem = divmod(k, n)
        idx_parts, draw_parts = [], []
        for p in range(passes):
            idx_parts.append(rng.permutation(n))
            draw_parts.append(np.full(n, p, dtype=np.int32))
        if rem:
            if scores is not None and source in scores:
                best = np.lexsort((np.arange(n), -np.asarray(scores[source], dtype=np.float64)))
                idx_parts.append(best[:rem])
            else:
                idx_parts.append(rng.choice(n, size=rem, replace=False))
            draw_parts.append(np.full(rem, passes, dtype=np.int32))
        idx = np.concatenate(idx_parts)
        out_src.extend([source] * k)
        out_ids.extend(pool[idx].tolist())
        out_draw.append(np.concatenate(draw_parts))
    draws = np.concatenate(out_draw) if out_draw else np.zeros(0, dtype=np.int32)
    order = np.random.default_rng(seed).permutation(len(out_ids))
    return [out_src[i] for i in order], [out_ids[i] for i in order], draws[order]
