"""The shared result type of every baseline, and the small checks and conversions all of them use.

Kept apart from ``baselines/__init__.py`` so the method modules can import it without a cycle. Everything
here is plain data: source names are strings, weights are ``dict[str, float]`` on the simplex, example ids are
whatever the :class:`~solvers.data.TokenizedSet` carries (its ``example_ids``, else the row index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solvers.common import StepCallback as StepCallback  # re-exported: every baseline's on_step type
from solvers.common import normalise
from solvers.data import TokenizedSet

ExampleId = str | int
"""An example's id: ``TokenizedSet.example_ids[i]`` when the set has ids, else the row index ``i``."""


@dataclass(frozen=True)
class MethodResult:
    """What every baseline returns.

    ``weights`` is always filled: per-source weights on the simplex whose keys are the source names in
    ``counts`` order. Example-level methods (LESS, RHO) also fill ``scores`` (one ``(example_id, source,
    score)`` per pool row, in row order) and ``selected`` (the chosen example ids, best first); their
    ``weights`` are the share of the selection that falls in each source unless their config says otherwise.
    """

    weights: dict[str, float]
    """Per-source weights, non-negative, summing to 1, keyed by source name."""
    scores: list[tuple[ExampleId, str, float]] | None = None
    """Per-example ``(example_id, source, score)``, higher is better; ``None`` for per-source methods."""
    selected: list[ExampleId] | None = None
    """Example ids chosen by an example-level method, best (or first drawn) first."""
    trajectory: list[dict[str, Any]] | None = None
    """Per-step records of an iterative method (DoReMi): ``step``, ``weights``, ``excess``, ``loss``."""
    info: dict[str, Any] = field(default_factory=dict)
    """Method-specific diagnostics (JSON-able scalars, lists and dicts only)."""


def check_counts(counts: Mapping[str, int]) -> list[str]:
    """Source names of ``counts`` in order, after checking it is a non-empty map of non-negative ints.

    Raises:
        ValueError: when ``counts`` is empty or a count is negative or not an integer.
    """
    if not counts:
        raise ValueError("counts must name at least one source")
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"counts[{name!r}] must be a non-negative integer, got {n!r}")
    return list(counts)


def check_pool(counts: Mapping[str, int], data: TokenizedSet, what: str = "train") -> None:
    """Check that a tokenized pool names the same sources, with the same sizes, as ``counts``.

    Raises:
        ValueError: naming the first mismatch.
    """
    if set(data.sources) != set(counts):
        raise ValueError(
            f"{what}.sources {sorted(data.sources)} differ from the counts keys {sorted(counts)}"
        )
    sizes = data.counts()
    for s, name in enumerate(data.sources):
        if int(sizes[s]) != int(counts[name]):
            raise ValueError(f"{what} holds {int(sizes[s])} rows of {name!r} but counts says {counts[name]}")


def example_id(data: TokenizedSet, row: int) -> ExampleId:
    """The id of row ``row``: its ``example_ids`` entry when the set has ids, else the row index."""
    return data.example_ids[row] if data.example_ids else row


def scores_table(data: TokenizedSet, scores: Sequence[float]) -> list[tuple[ExampleId, str, float]]:
    """``(example_id, source, score)`` for every row of ``data``, in row order."""
    return [
        (example_id(data, i), data.sources[int(data.source_ids[i])], float(sc)) for i, sc in enumerate(scores)
    ]


def selection_weights(data: TokenizedSet, rows: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    """Share of the selected ``rows`` that belongs to each source, keyed by ``names`` (order kept)."""
    picked = np.bincount(data.source_ids[np.asarray(rows, dtype=np.int64)], minlength=len(data.sources))
    by_name = {data.sources[s]: float(picked[s]) for s in range(len(data.sources))}
    return normalise({name: by_name.get(name, 0.0) for name in names}, when_zero="uniform")


def example_result(data: TokenizedSet, scores: Sequence[float], rows: Sequence[int], weights: dict[str, float],
                   info: dict[str, Any]) -> MethodResult:
    """The :class:`MethodResult` of an example-level method, so LESS and RHO report their selection alike.

    Args:
        data: the scored pool.
        scores: one score per row of ``data``, in row order.
        rows: the selected rows, best (or first drawn) first.
        weights: the per-source weights the method derives from its selection.
        info: method-specific diagnostics.
    """
    return MethodResult(weights=weights, scores=scores_table(data, scores),
                        selected=[example_id(data, i) for i in rows], info=info)


def n_selected(pool_size: int, fraction: float) -> int:
    """How many rows a top-``fraction`` selection keeps: ``ceil(fraction * pool_size)``, at least 1."""
    return max(1, min(pool_size, math.ceil(fraction * pool_size - 1e-9)))


def require_inputs(method: str, **inputs: Any) -> tuple[Any, ...]:
    """The given inputs in order, after checking none is ``None`` and no data set is empty.

    Raises:
        ValueError: naming the missing input and the method that needs it.
    """
    for name, value in inputs.items():
        if value is None:
            raise ValueError(f"method {method!r} needs {name}=..., got None")
        if isinstance(value, TokenizedSet) and len(value) == 0:
            raise ValueError(f"method {method!r} needs a non-empty {name} set")
    return tuple(inputs.values())


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value: object, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is finite and ``> 0`` (``>= 0`` if allowed)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_fraction(name: str, value: object, low_open: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is in (0, 1] ([0, 1) with ``low_open=False``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if low_open and not (ok and 0 < value <= 1):  # type: ignore[operator]
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    if not low_open and not (ok and 0 <= value < 1):  # type: ignore[operator]
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_choice(name: str, value: object, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
