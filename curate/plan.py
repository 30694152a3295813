"""``curate reweight --plan`` / ``--max-memory``: ScaleBiO's estimated peak memory, checked before any work.

The model's shape comes from its config alone (``--model tiny``: the config :func:`solvers.lm.tiny_llama` would
build from the ``tiny.*`` settings), so nothing is loaded and no data is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.config import build
from curate.errors import ConfigError
from curate.launch import resolve_device
from curate.modeling import TinyModel, max_positions
from curate.settings import ReweightSettings


def memory_plan(settings: ReweightSettings, cfg: Any, max_memory_gb: float | None) -> tuple[list[str], str | None]:
    """The plan's lines (full, LISA and LoRA ScaleBiO and plain fine-tuning for this model and batch) and an error
    line when the chosen variant does not fit the memory available (``None`` when it fits).

    Raises:
        ConfigError: a method other than ScaleBiO, a bad ``--max-memory`` or an unreadable model config.
    """
    from solvers.memory import available_memory, estimate, fitting_alternative, human, plan_lines

    if settings.method != "scalebio":
        raise ConfigError(f"--plan: memory plans are for --method scalebio, not {settings.method}")
    if max_memory_gb is not None and not max_memory_gb > 0:
        raise ConfigError(f"--max-memory: must be > 0 GiB, got {max_memory_gb}")
    shape = model_shape(settings)
    chosen = "lora" if cfg.lower_level == "lora" else "lisa" if cfg.lisa else "full"
    max_len = planned_max_len(settings)
    kw = {"val_batch": cfg.val_batch_size, "lisa_layers": cfg.lisa_layers, "lora_r": cfg.lora_r,
          "checkpointing": cfg.gradient_checkpointing}
    lines = plan_lines(shape, cfg.batch_size, max_len, chosen=chosen, **kw)
    if settings.max_len == "auto":
        lines.append(f"max_len auto: planned at its ceiling, {max_len} tokens (pass max_len=N to plan a length)")
    device = resolve_device(settings.device)
    budget = int(max_memory_gb * 2**30) if max_memory_gb is not None else available_memory(device)
    source = "--max-memory" if max_memory_gb is not None else (
        "available RAM" if device == "cpu" else f"free memory on {device}")
    lines.append(f"memory budget: {human(budget)} ({source})")
    need = estimate(shape, chosen, cfg.batch_size, max_len, **kw).total
    if need <= budget:
        return lines, None
    alt = fitting_alternative(shape, chosen, cfg.batch_size, max_len, budget, gpu=device != "cpu", **kw)
    hint = f"set {alt}" if alt else "no single change fits; use a smaller model or more memory"
    return lines, (f"--plan: this run needs about {human(need)} but {source} is {human(budget)}; {hint}")


def planned_max_len(settings: ReweightSettings) -> int:
    """``max_len``, or for ``auto`` the longest it can resolve to (the data is not read for a plan)."""
    from curate.tokens import AUTO_CEILING

    if isinstance(settings.max_len, int):
        return settings.max_len
    cap = max_positions(settings.model)
    return min(AUTO_CEILING, cap) if cap else AUTO_CEILING


def model_shape(settings: ReweightSettings) -> Any:
    """The :class:`solvers.memory.ModelShape` of ``--model``, from its config file (or the tiny settings)."""
    from solvers.memory import ModelShape

    if settings.model == "tiny":
        from solvers.lm import tiny_llama_config

        tiny = build(TinyModel, settings.tiny, where="tiny")
        return ModelShape.from_config(tiny_llama_config(tiny.vocab_size, tiny.hidden, tiny.layers, tiny.heads))
    path = Path(settings.model)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--plan: cannot read the config of {path} ({str(e).splitlines()[0][:160]})") from None
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return ModelShape.from_config(config, dtype_bytes=2 if "16" in dtype else 4)
