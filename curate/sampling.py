"""Turn source weights into a dataset of a fixed budget: how many rows each source gives, and how often it repeats.

``allocate`` is largest-remainder apportionment, so every source gets its exact share rounded up or down by less
than one row and the total is the budget. A source asked for more rows than it has is repeated in whole passes plus
a remainder (extra epochs over it, as the ScaleBiO resampler does). Repetition is capped by default at
:data:`DEFAULT_MAX_EPOCHS` passes per source and the surplus is redistributed over the sources that still have rows,
in proportion to their weights (UniMax-style water filling); ``max_epochs=None`` (``--max-epochs none``) lifts the
cap. :func:`cap_hits` says which sources the cap held back and by how much, for the summary and the manifest. The
draw itself (which rows) is SQL in :mod:`curate.resample`.

``check_budget`` and ``check_budget_fits`` are the guards every caller runs first, so a budget of 0 or 10**12 is
refused in one line before anything is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from curate.errors import ConfigError, DataError

DEFAULT_MAX_EPOCHS = 4.0
"""Passes over a source a budget may take unless ``--max-epochs`` says otherwise: repeated data stays nearly as good
as fresh up to about 4 epochs and degrades after (Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models"); UniMax (Chung et al. 2023) caps epochs per source the same way."""
MAX_PASSES = 100
"""With ``--max-epochs none`` a budget may repeat the weighted sources' pool at most this many times over."""
MAX_ROWS = 50_000_000
"""The most rows one resample draws, whatever ``--max-epochs`` allows (DuckDB sorts them, spilling to disk)."""
BYTES_PER_ROW = 100
"""A rough size of one drawn row in DuckDB's sort (id, pass number, key), for the message refusing a budget."""


def parse_max_epochs(value: str | float | None, flag: str = "--max-epochs") -> float | None:
    """``--max-epochs`` as typed: a positive number of passes, or ``none`` (no cap; also ``None`` itself).

    A command line cannot pass Python's ``None``, so the word is the way to ask for unlimited repeats; ``inf`` is
    refused rather than taken as a cap nothing can reach, so there is one spelling for "no cap".

    Raises:
        ConfigError: not a number, not finite, or not above 0, naming ``flag`` and the fix.
    """
    if value is None:
        return None
    fix = f"give a number of passes above 0 (default {DEFAULT_MAX_EPOCHS:g}), or 'none' for no cap"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return None
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{flag} {value!r}: not a number; {fix}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{flag} {value!r}: not a number; {fix}")
    else:
        number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{flag} {value}: must be finite and above 0; {fix}")
    return number


def _cap_message(budget: int, max_epochs: float, allowed: int) -> str:
    return (f"--budget {budget:,} exceeds what --max-epochs {max_epochs:g} allows ({allowed:,} rows: "
            f"{max_epochs:g} passes over each weighted source); lower --budget, raise --max-epochs, or pass "
            "--max-epochs none to repeat rows without a cap")


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


def check_budget_fits(budget: int, pool_rows: int | None, max_epochs: float | None = DEFAULT_MAX_EPOCHS,
                      flag: str = "--budget") -> int:
    """Refuse a budget the pool cannot serve, before any id is read (or, for ``reweight``, before training).

    Rules (also in ``curate resample --help``): :func:`check_budget`; at most :data:`MAX_ROWS` rows; with a cap,
    at most ``max_epochs`` passes over ``pool_rows`` (the rows of the sources with a positive weight; per source
    :func:`allocate` then enforces it); with ``max_epochs=None`` (no cap), at most :data:`MAX_PASSES` times
    ``pool_rows``, since a budget that large is almost always a typo. ``pool_rows=None`` (the pool is not known
    yet) checks the ceiling only. Returns the budget.

    Raises:
        ConfigError: naming ``flag``, the rows asked for, the rows the pool holds and the fix.
    """
    check_budget(budget, flag)
    pool = "" if pool_rows is None else f" from a pool of {pool_rows:,} rows (the weighted sources)"
    if budget > MAX_ROWS:
        gb = budget * BYTES_PER_ROW / 1e9
        raise ConfigError(f"{flag} {budget:,}: would draw {budget:,} rows{pool}, about {gb:,.0f} GB of memory; "
                          f"one resample draws at most {MAX_ROWS:,} rows, lower {flag}")
    if not pool_rows:
        return budget
    if max_epochs is not None and budget > math.floor(max_epochs * pool_rows):
        raise ConfigError(_cap_message(budget, max_epochs, math.floor(max_epochs * pool_rows)))
    if max_epochs is None and budget > MAX_PASSES * pool_rows:
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

    ``max_epochs`` defaults to no cap here (the plain apportionment, which :func:`cap_hits` compares against);
    every command passes :data:`DEFAULT_MAX_EPOCHS` unless told otherwise.

    Args:
        weights: source -> weight on the simplex.
        budget: total rows wanted.
        available: source -> rows stored (only needed with ``max_epochs`` or to refuse empty sources).
        max_epochs: cap each source at ``floor(max_epochs * available)`` rows and redistribute the excess.

    Raises:
        DataError: a negative budget, a weighted source with no rows, or a cap that cannot hold the budget.
    """
    return _water_fill(weights, budget, available, max_epochs)[0]


def _water_fill(weights: Mapping[str, float], budget: int, available: Mapping[str, int],
                max_epochs: float | None) -> tuple[dict[str, int], list[str]]:
    """The allocation and the sources held at their cap (fixed there by the water filling)."""
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
        return out, []
    if max_epochs <= 0:
        raise DataError(f"--max-epochs: must be > 0, got {max_epochs}")
    caps = {s: math.floor(max_epochs * available[s]) for s in active}
    if sum(caps.values()) < budget:
        raise DataError(_cap_message(budget, max_epochs, sum(caps.values())))
    free, left, held = dict(active), budget, []
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
        held += over
    out.update(_largest_remainder(shares, left, free))
    return out, sorted(held)


@dataclass(frozen=True)
class CapHit:
    """A source the epoch cap held back: what its weight asked for and what it got."""

    wanted: int
    """Rows the weights alone give it (no cap)."""
    allocated: int
    """Rows it gets: ``floor(max_epochs * available)``."""
    available: int

    @property
    def cut(self) -> int:
        """Rows its allocation lost to the cap (they went to the sources with rows left)."""
        return max(0, self.wanted - self.allocated)

    def to_dict(self) -> dict[str, int]:
        return {"wanted": self.wanted, "allocated": self.allocated, "available": self.available, "cut": self.cut}


@dataclass(frozen=True)
class Allocation:
    """Rows per source under the cap, next to what the weights alone ask for, and the sources the cap held."""

    rows: dict[str, int]
    wanted: dict[str, int]
    """The uncapped allocation (:func:`allocate` without ``max_epochs``)."""
    capped: dict[str, CapHit]
    max_epochs: float | None

    def warnings(self) -> list[str]:
        """One line per capped source (rows wanted, rows kept, the cut), then where the surplus went.

        A silent cap would hide that the mixture drawn is not the mixture learned, so every command prints these.
        """
        if not self.capped or self.max_epochs is None:
            return []
        lines = [f"source {s!r} hit --max-epochs {self.max_epochs:g}: {h.allocated:,} rows "
                 f"({h.allocated / h.available:.2f} passes over {h.available:,}) instead of the {h.wanted:,} its "
                 f"weight asks for (cut by {h.cut:,})" for s, h in sorted(self.capped.items())]
        gained = {s: k - self.wanted.get(s, 0) for s, k in self.rows.items() if s not in self.capped}
        went = ", ".join(f"{s} +{g:,}" for s, g in sorted(gained.items(), key=lambda kv: (-kv[1], kv[0])) if g > 0)
        cut = sum(h.cut for h in self.capped.values())
        lines.append(f"the {cut:,} rows cut went to the sources with rows left{f' ({went})' if went else ''}; "
                     "pass --max-epochs none to repeat rows without a cap")
        return lines

    def capped_dict(self) -> dict[str, dict[str, int]]:
        """The manifest's ``capped``: per held source, rows wanted, allocated, available and cut."""
        return {s: h.to_dict() for s, h in sorted(self.capped.items())}


def plan_allocation(weights: Mapping[str, float], budget: int, available: Mapping[str, int],
                    max_epochs: float | None = DEFAULT_MAX_EPOCHS) -> Allocation:
    """:func:`allocate` under ``max_epochs``, with the uncapped allocation and the sources held at their cap.

    Raises:
        DataError: as :func:`allocate`.
    """
    rows, held = _water_fill(weights, budget, available, max_epochs)
    wanted = allocate(weights, budget, available) if held else dict(rows)
    # A source fixed at its cap only in a later round of the filling got more than its weight asks for; it
    # lost nothing, it just took less of the surplus, so it is not reported as cut.
    hits = {s: CapHit(wanted[s], rows[s], int(available[s])) for s in held if wanted[s] > rows[s]}
    return Allocation(rows, wanted, hits, max_epochs)
