"""The settings of `curate reweight`: top-level keys, each method's own keys, and how a config dict splits into them.

A config (YAML plus ``key=value`` overrides) mixes top-level keys (``target``, ``max_len``, ...) with the chosen
method's keys, written flat (``steps=300``) or under the method's name (``scalebio.steps=300``; `compare` needs the
second spelling, since it runs several methods). :func:`settings_from` splits them; :func:`method_config` builds
the method's frozen config, with ``--steps`` and ``--seed`` folded in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from curate import methods
from curate.config import build, to_dict
from curate.corpus import STREAM_ABOVE
from curate.errors import ConfigError
from curate.launch import check_device, current_rank, resolve_device
from curate.sampling import DEFAULT_MAX_EPOCHS


@dataclass(frozen=True)
class ReweightSettings:
    """Everything `curate reweight` needs; method-specific keys live in ``method_args``."""

    method: str = "scalebio"
    target: str = "val"
    model: str = "tiny"
    steps: int | None = None
    budget: int | None = None
    max_epochs: float | None = DEFAULT_MAX_EPOCHS
    """With ``budget``: the most passes the resample takes over any one source (the surplus goes to the others);
    ``None`` (``--max-epochs none``): no cap."""
    seed: int = 0
    max_len: int | str = "auto"
    """Tokens per example: ``auto`` (the default) picks the length at which 99% of pool and target rows are not
    truncated (capped by the model's max positions and 1024, see ``curate.tokens``); ``N`` sets it."""
    template: str = "auto"
    truncation: str = "keep_response"
    """How a too-long example is cut: ``keep_response`` drops the prompt's start (template tokens stay) and cuts a
    response only when it alone does not fit; ``right`` cuts from the end (responses can be lost entirely)."""
    tiny: dict = field(default_factory=dict)
    method_args: dict = field(default_factory=dict)
    per_method: dict = field(default_factory=dict)
    group_by: str | None = None
    """``--group-by NAME``: weigh the groups of a ``curate cluster`` grouping (``source/cNN``) instead of sources;
    ``weights.json`` then has ``groups`` and keeps ``sources`` as their sums."""
    stream_above: int = STREAM_ABOVE
    """Model-based methods read a pool of more rows than this from a memory-mapped snapshot and tokenize each batch
    as it is drawn (memory bounded by the batch, not the pool; see ``curate.snapshot``); ``0`` streams always."""
    save_model: bool = False
    """ScaleBiO: also save the final w model (fits the target, near-optimal on the weighted pool) to RUN/model."""
    device: str = "auto"
    """Where every model-based method trains and scores (ScaleBiO, LESS, RHO, DoReMi): ``auto`` (the first GPU when
    torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. On a GPU the model passes run under bf16
    autocast unless the method's ``autocast_bf16=false`` is set; weights, optimizer moments and each method's
    statistics (λ and p, scores, projections, DoReMi's α) stay fp32 or fp64."""

    def __post_init__(self) -> None:
        if self.method not in methods.METHODS:
            raise ValueError(f"--method: {self.method!r} is not one of {', '.join(methods.names())}")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"--budget: must be >= 1 rows, got {self.budget}")
        if self.max_epochs is not None and not (0 < self.max_epochs < float("inf")):
            raise ValueError(f"--max-epochs: must be finite and above 0, or none for no cap; got {self.max_epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps: must be >= 1, got {self.steps}")
        if isinstance(self.max_len, str) and self.max_len != "auto":
            raise ValueError(f"max_len: {self.max_len!r} is neither auto nor a number of tokens")
        if isinstance(self.max_len, int) and self.max_len < 8:
            raise ValueError("max_len must be >= 8 (or auto)")
        if self.truncation not in ("keep_response", "right"):
            raise ValueError(f"truncation: {self.truncation!r} is not one of keep_response, right")
        if self.template not in ("auto", "alpaca", "plain"):
            raise ValueError(f"template: {self.template!r} is not one of auto, alpaca, plain")
        if self.stream_above < 0:
            raise ValueError(f"stream_above: must be >= 0 rows, got {self.stream_above}")
        check_device(self.device)


def method_config(settings: ReweightSettings) -> Any:
    """The chosen method's own config dataclass, with --steps and --seed folded in.

    Raises:
        ConfigError: an unknown or ill-typed key, or ``--steps`` for a method without a step count.
    """
    method = methods.get(settings.method)
    cls = method.config_class()
    values = {**settings.per_method.get(settings.method, {}), **settings.method_args}
    names = {f.name for f in dataclasses.fields(cls)}
    if settings.steps is not None:
        if method.step_key is None:
            raise ConfigError(f"--steps: {settings.method} has no step count; set its own keys instead")
        values[method.step_key] = settings.steps
    if "seed" in names:
        values.setdefault("seed", settings.seed)
    # bf16 model passes on a GPU unless the user says otherwise; DeepSpeed ranks take bf16 from the DeepSpeed
    # config instead (its engine owns the precision).
    if "autocast_bf16" in names and not current_rank().in_job and resolve_device(settings.device) != "cpu":
        values.setdefault("autocast_bf16", True)
    return build(cls, values, where=settings.method)


def settings_from(values: dict[str, Any]) -> ReweightSettings:
    """Split a merged config dict into top-level settings and the method's own keys (flat or ``method.key``)."""
    top = {f.name for f in dataclasses.fields(ReweightSettings)}
    known = methods.names()
    flat = {k: v for k, v in values.items() if k in top and k not in ("method_args", "per_method")}
    flat["per_method"] = {m: values[m] for m in known if isinstance(values.get(m), dict)}
    flat["method_args"] = {k: v for k, v in values.items() if k not in top and k not in known}
    methods.get(values.get("method", "scalebio"))
    return build(ReweightSettings, flat, where="reweight")


def settings_to_values(settings: ReweightSettings) -> dict[str, Any]:
    """The inverse of :func:`settings_from`: the config dict a resumed run starts from."""
    values = {k: v for k, v in to_dict(settings).items() if k not in ("method_args", "per_method")}
    values.update(settings.per_method)
    values.update(settings.method_args)
    return values
