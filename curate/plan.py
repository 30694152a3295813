"""``curate reweight --plan`` / ``--max-memory``: the method's estimated peak memory, checked before any work.

The model's shape comes from its config alone (``--model tiny``: the config :func:`solvers.lm.tiny_llama` would
build from the ``tiny.*`` settings), so nothing is loaded and no data is read. Per method, with P the model's
parameters, b bytes each, L LESS's attention-LoRA parameters, A(B) the activations of a B-row batch and F(B) a
no-grad forward (the formulas and their terms are in :mod:`solvers.memory`):

- ScaleBiO full ≈ 2·P·b params + 2·P·b grads + 4·P·b AdamW + A (LISA and LoRA train fewer; see ``estimate``);
- RHO ≈ 5·P·b + max(A(reference_batch_size), F(batch_size)): base + reference, the reference's grads and AdamW;
- DoReMi ≈ 6·P·b + A(batch_size) + F(batch_size): base + reference + proxy, the proxy's grads and AdamW;
- LESS ≈ 2·P·b + L·b + 3·E·L·b checkpoints + the larger of the warmup (3·L·b, A(warmup_batch_size)) and the
  feature pass (A(grad_batch_size), the per-example-gradient buffer and one projection slice);
- uniform, proportional, temperature build no model: nothing to plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate import methods
from curate.config import build
from curate.errors import ConfigError
from curate.launch import resolve_device
from curate.modeling import TinyModel, max_positions
from curate.settings import ReweightSettings


def memory_plan(settings: ReweightSettings, cfg: Any, max_memory_gb: float | None) -> tuple[list[str], str | None]:
    """The plan's lines (for ScaleBiO its full, LISA and LoRA variants; for a baseline its own estimate; plain
    fine-tuning beside either) and an error line when the chosen one does not fit the memory available (``None``
    when it fits).

    Raises:
        ConfigError: a bad ``--max-memory`` or an unreadable model config.
    """
    from solvers.memory import estimate, fitting_alternative, human, plan_lines

    if max_memory_gb is not None and not max_memory_gb > 0:
        raise ConfigError(f"--max-memory: must be > 0 GiB, got {max_memory_gb}")
    if settings.method != "scalebio":
        return baseline_plan(settings, cfg, max_memory_gb)
    shape = model_shape(settings)
    chosen = "lora" if cfg.lower_level == "lora" else "lisa" if cfg.lisa else "full"
    max_len = planned_max_len(settings)
    kw = {"val_batch": cfg.val_batch_size, "lisa_layers": cfg.lisa_layers, "lora_r": cfg.lora_r,
          "checkpointing": cfg.gradient_checkpointing}
    lines = plan_lines(shape, cfg.batch_size, max_len, chosen=chosen, **kw)
    if settings.max_len == "auto":
        lines.append(f"max_len auto: planned at its ceiling, {max_len} tokens (pass max_len=N to plan a length)")
    budget, source = memory_budget(settings, max_memory_gb)
    lines.append(f"memory budget: {human(budget)} ({source})")
    need = estimate(shape, chosen, cfg.batch_size, max_len, **kw).total
    if need <= budget:
        return lines, None
    gpu = resolve_device(settings.device) != "cpu"
    alt = fitting_alternative(shape, chosen, cfg.batch_size, max_len, budget, gpu=gpu, **kw)
    hint = f"set {alt}" if alt else "no single change fits; use a smaller model or more memory"
    return lines, (f"--plan: this run needs about {human(need)} but {source} is {human(budget)}; {hint}")


def memory_budget(settings: ReweightSettings, max_memory_gb: float | None) -> tuple[int, str]:
    """The bytes a run may use and where that number comes from: ``--max-memory``, else what the resolved device
    has free now (a GPU's free memory, or the host's available RAM)."""
    from solvers.memory import available_memory

    if max_memory_gb is not None:
        return int(max_memory_gb * 2**30), "--max-memory"
    device = resolve_device(settings.device)
    return available_memory(device), "available RAM" if device == "cpu" else f"free memory on {device}"


BATCH_KEYS = {"less": ("grad_batch_size", "warmup_batch_size", "feature_buffer_mb"),
              "rho": ("reference_batch_size", "batch_size"), "doremi": ("batch_size",)}
"""The baselines ``--plan`` estimates, and the keys a plan that does not fit tries to halve, in order."""


def baseline_plan(settings: ReweightSettings, cfg: Any, max_memory_gb: float | None) -> tuple[list[str], str | None]:
    """The plan of a method other than ScaleBiO: its estimate beside plain fine-tuning at the same batch, and an
    error line naming a smaller batch that fits when it does not (``None`` when it fits)."""
    from solvers.memory import estimate, estimate_line, human, model_line

    if "model" not in methods.get(settings.method).needs:
        return [f"{settings.method}: builds no model, it needs only the pool's row counts (nothing to plan)"], None
    if settings.method not in BATCH_KEYS:
        return [f"{settings.method}: no memory estimate for this method (--plan knows scalebio, "
                f"{', '.join(BATCH_KEYS)})"], None
    shape, seq = model_shape(settings), planned_max_len(settings)
    planned = baseline_estimate(settings.method, shape, seq, cfg)
    batch = int(getattr(cfg, BATCH_KEYS[settings.method][0]))
    lines = [model_line(shape, batch, seq),
             estimate_line("fine-tune (reference)", estimate(shape, "finetune", batch, seq)),
             estimate_line(planned.variant, planned, True)]
    if settings.max_len == "auto":
        lines.append(f"max_len auto: planned at its ceiling, {seq} tokens (pass max_len=N to plan a length)")
    budget, source = memory_budget(settings, max_memory_gb)
    lines.append(f"memory budget: {human(budget)} ({source})")
    if planned.total <= budget:
        return lines, None
    hint = _smaller_batch(settings.method, shape, seq, cfg, budget)
    return lines, (f"--plan: this run needs about {human(planned.total)} but {source} is {human(budget)}; "
                   f"{hint or 'no smaller batch fits; use a smaller model or more memory'}")


def baseline_estimate(method: str, shape: Any, seq: int, cfg: Any) -> Any:
    """The :class:`solvers.memory.Estimate` of LESS, RHO or DoReMi with ``cfg``'s batch sizes and buffers."""
    from solvers.memory import doremi_estimate, less_estimate, rho_estimate

    if method == "rho":
        return rho_estimate(shape, seq, reference_batch=cfg.reference_batch_size, score_batch=cfg.batch_size)
    if method == "doremi":
        return doremi_estimate(shape, seq, batch=cfg.batch_size)
    return less_estimate(shape, seq, lora_r=cfg.lora_r, warmup_batch=cfg.warmup_batch_size,
                         warmup_epochs=cfg.warmup_epochs, grad_batch=cfg.grad_batch_size, proj_dim=cfg.proj_dim,
                         proj_chunk_rows=cfg.proj_chunk_rows, feature_buffer_mb=cfg.feature_buffer_mb)


def _smaller_batch(method: str, shape: Any, seq: int, cfg: Any, budget: int) -> str | None:
    """``set KEY=V`` for the first of the method's batch keys that, halved until it fits, brings it under budget."""
    import dataclasses

    for key in BATCH_KEYS[method]:
        value = getattr(cfg, key)
        while value > 1:
            value = value // 2 if isinstance(value, int) else value / 2
            smaller = dataclasses.replace(cfg, **{key: value})
            if baseline_estimate(method, shape, seq, smaller).total <= budget:
                return f"set {key}={value}"
    return None


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
