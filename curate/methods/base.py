"""What a method is to `curate`: its registry entry (:class:`Method`), what it is given (:class:`FitInputs`) and
the one typed result every method returns (:class:`FitResult`, with :class:`TrajectoryRow` per step).

The entry names the config class and the fit function either directly or as ``"module:attr"`` strings that are
imported only when the method runs, so listing or validating methods never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from curate.corpus import PoolLike, Rows
from curate.runs import RunFolder
from solvers.common import StepCallback

Need = Literal["model", "target", "torch"]


@dataclass(frozen=True)
class TrajectoryRow:
    """One step of an iterative method: the weights it held and the step's scalar metrics."""

    step: int
    weights: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """``step``, the metrics, then ``p_<source>`` per weight: the columns of ``trajectory.parquet``."""
        return {"step": self.step, **self.metrics, **{f"p_{s}": w for s, w in self.weights.items()}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrajectoryRow:
        """A row from a solver's plain record: weights from a ``weights`` mapping or from ``p_<source>`` keys
        (ScaleBiO), other mappings flattened as ``<key>_<source>`` (DoReMi's ``excess``)."""
        nested = record.get("weights")
        weights = dict(nested) if isinstance(nested, Mapping) else {
            k[2:]: float(v) for k, v in record.items() if k.startswith("p_")}
        metrics: dict[str, Any] = {}
        for key, value in record.items():
            if key in ("step", "weights") or (key.startswith("p_") and not isinstance(nested, Mapping)):
                continue
            if isinstance(value, Mapping):
                metrics.update({f"{key}_{k}": v for k, v in value.items()})
            else:
                metrics[key] = value
        return cls(int(record["step"]), {str(k): float(v) for k, v in weights.items()}, metrics)


@dataclass
class FitResult:
    """What every method returns; :func:`curate.runs.write_result_files` and the run record store it."""

    weights: dict[str, float]
    """Per-source weights (non-negative; normalised before they are written)."""
    averaged: dict[str, float] | None = None
    """Iterate-averaged weights, for solvers that have them (ScaleBiO)."""
    scores: list[tuple[Any, str, float]] | None = None
    """Per-example ``(example_id, source, score)``, higher is better (example-level methods)."""
    selected: list[Any] | None = None
    """The example ids an example-level method chose, best first."""
    trajectory: list[TrajectoryRow] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    """The trained model a method may hand back (ScaleBiO's w, saved with ``save_model=true``)."""


@dataclass
class FitInputs:
    """Everything a method's ``fit`` may use; the pipeline fills the model fields only for ``needs={"model"}``."""

    method: str
    cfg: Any
    counts: dict[str, int]
    """Rows per source the method weighs (usable rows after tokenization for model-based methods)."""
    pool: PoolLike | None
    """The pool's rows (None for a method that reads none: counts are all it uses)."""
    target: Rows
    run: RunFolder
    seed: int = 0
    on_step: StepCallback | None = None
    resume: bool = False
    device: str = "cpu"
    model: Any = None
    tokenizer: Any = None
    train: Any = None
    """The tokenized pool: a :class:`solvers.data.TokenizedSet` (label-less rows dropped), or for a streamed pool a
    :class:`solvers.stream.StreamedSet` (label-less rows stepped over as met)."""
    target_set: Any = None
    """The tokenized target."""
    zero_stage: int | None = None
    """Set on the ranks of a ``--launcher deepspeed`` job."""
    ds_config: dict[str, Any] | None = None
    save_model: bool = False
    token_report: Any = None
    """What tokenization kept and cut (:class:`curate.tokens.TokenReport`); the pipeline adds it to diagnostics."""


@dataclass(frozen=True)
class Method:
    """A registered method: how to configure it, what it needs, and its ``fit``."""

    name: str
    config: type | str
    """Its frozen config dataclass, or ``"module:Class"`` imported on first use."""
    fit: Callable[[FitInputs], FitResult] | str
    """``fit(inputs) -> FitResult``, or ``"module:function"``."""
    summary: str
    step_key: str | None = None
    """The config key ``--steps`` sets, and what the progress bar counts to (None: the method has no step count)."""
    needs: frozenset[str] = frozenset()
    """Of ``model`` (a model and tokenized data are built for it), ``target`` (target rows must exist) and
    ``torch`` (the train extra)."""
    level: Literal["source", "example"] = "source"
    """``example``: it also scores rows (``scores.parquet``), and the resampler walks each source best-first."""
    resumable: bool = False
    """``--resume`` continues it from ``checkpoints/``."""
    reads_text: bool = True
    """It reads the pool's rows (``FitInputs.pool``); False for a method that uses the row counts alone, so a
    pool of millions is never read for it."""
    distributed: bool = False
    """``--launcher deepspeed`` runs it."""
    shards_pool: bool = False
    """With ``distributed``: its ranks run no DeepSpeed engine but each score a share of the pool over gloo
    (``--zero``/``--deepspeed-config`` do not apply; ``--resume`` does)."""

    def config_class(self) -> type:
        return _resolve(self.config)

    def fit_fn(self) -> Callable[[FitInputs], FitResult]:
        return _resolve(self.fit)


def _resolve(ref: Any) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
