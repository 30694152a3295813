"""The one method registry: every caller (CLI, pipeline, compare, docs) looks methods up here.

Adding a method is one module with a config dataclass and ``fit(inputs: FitInputs) -> FitResult``, plus one
line in :data:`METHODS` (or, from a test or a plugin, one :func:`register` call)::

    register(Method("mine", "my_pkg.mine:MineConfig", "my_pkg.mine:fit", "what it does", needs=frozenset({"model"})))

Configs and fits are named as ``"module:attr"`` strings so that listing methods and checking a command line
import neither torch nor the method's code.
"""

from __future__ import annotations

from curate.errors import ConfigError
from curate.methods.base import FitInputs, FitResult, Method, TrajectoryRow

__all__ = ["METHODS", "FitInputs", "FitResult", "Method", "TrajectoryRow", "get", "names", "register"]

_MODEL = frozenset({"model", "target", "torch"})
_BASELINE = "curate.methods.baselines:fit"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("scalebio", "solvers.scalebio:ScaleBiOConfig", "curate.methods.scalebio:fit",
           "first-order bilevel source weights (ScaleBiO)", step_key="steps", needs=_MODEL, resumable=True,
           distributed=True),
    Method("uniform", "baselines.simple:UniformConfig", _BASELINE, "equal weight per source",
           needs=frozenset({"torch"}), reads_text=False),
    Method("proportional", "baselines.simple:ProportionalConfig", _BASELINE, "weights proportional to size",
           needs=frozenset({"torch"}), reads_text=False),
    Method("temperature", "baselines.simple:TemperatureConfig", _BASELINE, "size^(1/T) temperature sampling",
           needs=frozenset({"torch"}), reads_text=False),
    Method("less", "baselines.less:LessConfig", _BASELINE, "LoRA gradient influence on the target (LESS)",
           needs=_MODEL, level="example", resumable=True, distributed=True, shards_pool=True),
    Method("rho", "baselines.rho:RhoConfig", _BASELINE, "excess loss over a target-trained reference (RHO-1)",
           step_key="reference_steps", needs=_MODEL, level="example", resumable=True),
    Method("doremi", "baselines.doremi:DoremiConfig", _BASELINE, "Group-DRO proxy weights (DoReMi)",
           step_key="proxy_steps", needs=frozenset({"model", "torch"})),
)}


def names() -> tuple[str, ...]:
    """The registered method names, in registry order."""
    return tuple(METHODS)


def get(name: str, flag: str = "--method") -> Method:
    """The registered method ``name``.

    Raises:
        ConfigError: no such method, naming ``flag`` and the choices.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"{flag}: {name!r} is not one of {', '.join(METHODS)}") from None


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to override an entry); returns it."""
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method
