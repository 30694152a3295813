"""``weights.json``: the one artefact every per-source method writes, validated on read and write.

Schema (DESIGN.md §4): ``{"method", "sources": {name: weight}, "final", "averaged", "counts", "target",
"config_hash", "data_fingerprint", "created_at", "curate_version", ...}``. ``sources`` is the vector the resampler
uses; ``final`` and ``averaged`` keep the solver's last and iterate-averaged weights where they differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curate import __version__
from curate.errors import DataError
from curate.io import write_json
from solvers.common import normalise as _normalise

TOLERANCE = 1e-6


def validate_weights(weights: Mapping[str, float], known: set[str] | None = None, where: str = "weights") -> dict[
        str, float]:
    """Check a source-weight mapping: non-empty, finite, non-negative, sums to 1 within 1e-6, known sources only.

    Raises:
        DataError: naming ``where`` and the offending source.
    """
    if not weights:
        raise DataError(f"{where}: no sources; a weights file needs at least one source")
    for name, w in weights.items():
        if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise DataError(f"{where}: weight of {name!r} is {w!r}; weights must be finite and >= 0")
    total = sum(weights.values())
    if abs(total - 1.0) > TOLERANCE:
        raise DataError(f"{where}: weights sum to {total:.9g}, not 1; renormalise them")
    if known is not None:
        unknown = sorted(set(weights) - known)
        if unknown:
            raise DataError(
                f"{where}: source {unknown[0]!r} is not in the database (known: {', '.join(sorted(known)) or 'none'});"
                " ingest it or use the --db it was learned on"
            )
    return {str(k): float(v) for k, v in weights.items()}


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Scale non-negative weights to sum to 1, so a method's float rounding never fails validation.

    :func:`solvers.common.normalise` refusing an all-zero vector (a weights file must not invent a mixture),
    with its complaint as a :class:`DataError` so the CLI reports it like every other bad-weights problem.

    Raises:
        DataError: empty, negative, non-finite or all-zero weights.
    """
    try:
        return _normalise(weights, when_zero="raise")
    except ValueError as e:
        raise DataError(f"weights: {e}") from None


def by_source(values: Mapping[str, Any], group_source: Mapping[str, str]) -> dict[str, Any]:
    """Per-group values summed per source (``--group-by``: a source's weight is its groups' total)."""
    out: dict[str, Any] = {}
    for group, v in values.items():
        source = group_source[group]
        out[source] = out.get(source, 0) + v
    return dict(sorted(out.items()))


def build_weights_doc(method: str, weights: Mapping[str, float], *, counts: Mapping[str, int],
                      target: str | None, config_hash: str, data_fingerprint: str,
                      averaged: Mapping[str, float] | None = None, extra: dict[str, Any] | None = None) -> dict:
    """The ``weights.json`` document for a method's output."""
    final = validate_weights(weights)
    doc: dict[str, Any] = {
        "method": method, "sources": final, "final": final,
        "averaged": validate_weights(averaged) if averaged else None,
        "counts": {k: int(v) for k, v in counts.items()}, "target": target, "config_hash": config_hash,
        "data_fingerprint": data_fingerprint, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "curate_version": __version__,
    }
    doc.update(extra or {})
    return doc


def write_weights(path: Path, doc: dict) -> Path:
    """Validate and write ``weights.json`` atomically."""
    validate_weights(doc.get("sources", {}), where=str(path))
    return write_json(path, doc)


def read_weights(path_or_run: Path) -> tuple[Path, dict]:
    """Load ``weights.json`` from a run folder or a file path; returns (path, doc).

    Raises:
        DataError: missing, not JSON, or invalid weights.
    """
    from curate.runs import RunFolder

    path = RunFolder(path_or_run).weights if path_or_run.is_dir() else path_or_run
    if not path.exists():
        raise DataError(f"{path}: no weights.json; pass a run folder from `curate reweight` or a weights file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e}); fix or regenerate it") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: is JSON but not an object ({type(doc).__name__}); expected "
                        "{\"method\": ..., \"sources\": {name: weight}} as `curate reweight` writes it")
    if not isinstance(doc.get("sources"), dict):
        raise DataError(f"{path}: no 'sources' mapping; expected "
                        "{\"method\": ..., \"sources\": {name: weight}} as `curate reweight` writes it")
    validate_weights(doc["sources"], where=str(path))
    return path, doc
