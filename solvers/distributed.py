"""ScaleBiO on several processes with DeepSpeed ZeRO (stage 2 or 3): u and w are each a DeepSpeed engine.

Run every rank under ``torchrun`` (or the ``deepspeed`` launcher); on CPU set ``DS_ACCELERATOR=cpu`` (gloo is
used). Every rank draws the same global batch from identically seeded samplers and trains on its own slice
``rows[rank::world]``; the estimators are those of the global batch (ALGORITHMS.md §2.1, the research4pan form):

- per-source counts c_s are summed over ranks (all-reduce), and each rank's weighted loss is
  ``world · Σ_s p_s · (local loss sum of source s) / c_s``, so the engines' gradient *average* over ranks is the
  gradient of the global-batch L2;
- the target loss is each rank's NLL sum over the global number of response tokens, times ``world``;
- the source logits λ are replicated: each rank computes its slice's share of α·p·(ℓ̄_w − ℓ̄_u), the gradients
  are summed by all-reduce, and every rank takes the same AdamW step, so λ stays identical everywhere.

u and w each get their own ``torch.optim.AdamW`` (passed in with ``zero_allow_untested_optimizer``, which avoids
compiling DeepSpeed's fused_adam), ``gradient_clipping`` of ``grad_clip`` (u) and ``alpha · grad_clip`` (w).
Only rank 0 should write results (:func:`is_writer`). Not supported here: LISA (ZeRO partitions what trains at
initialisation), ``lower_level="lora"``, growing α (``stages > 1``), bf16 autocast and checkpoints.

A user's own DeepSpeed config (``ds_config``; ``curate reweight --deepspeed-config FILE``) is the base of both
engines' configs (:func:`engine_config`): its ZeRO offload, bucket and precision settings are kept; curate sets
the batch sizes, gradient accumulation (1), clipping and the optimizer flags on top, refuses ``optimizer`` and
``scheduler`` blocks and batch/clipping values other than its own, and an explicit ``zero_stage`` (``--zero``)
beats the file's ``zero_optimization.stage``. ZeRO-Offload runs curate's torch AdamW on the host
(``zero_force_ds_cpu_optimizer`` is off): it works with ``DS_ACCELERATOR=cpu``, but is not DeepSpeedCPUAdam-fast.

deepspeed is optional (``pip install 'curate[deepspeed]'``); this is the only module that imports it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from solvers.lm import IGNORE, label_rows, token_losses
from solvers.scalebio import schedule
from solvers.scalebio.config import ScaleBiOConfig
from solvers.scalebio.loop import (
    BatchSampler,
    ScaleBiOResult,
    _check_inputs,
    _result,
    _row,
    _Run,
    enable_checkpointing,
)
from solvers.scalebio.simplex import weights
from solvers.scalebio.step import NonFiniteLossError, SolverState


def init(backend: str = "gloo") -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed once (env from torchrun); returns (rank, world size).

    Without torchrun's environment it starts a one-process group on localhost.
    """
    import deepspeed

    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29511")):
        os.environ.setdefault(key, value)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size()


def is_writer() -> bool:
    """True on the rank that writes files (rank 0), and outside a process group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def shutdown() -> None:
    """Wait for every rank, then tear the process group down (call once at the end of a rank's work, so no rank
    exits while another still talks to it)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def zero_stage_of(user: Mapping[str, Any] | None, zero_stage: int | None = None) -> int:
    """The ZeRO stage to run: ``zero_stage`` when given (``--zero``), else the user config's
    ``zero_optimization.stage``, else 2, so a user config alone can choose the stage."""
    if zero_stage is not None:
        return zero_stage
    zero = (user or {}).get("zero_optimization") or {}
    stage = zero.get("stage", 2) if isinstance(zero, Mapping) else 2
    if isinstance(stage, bool) or not isinstance(stage, int):
        raise ValueError(f"'zero_optimization.stage' must be an integer 0..3, got {stage!r}")
    return stage


def engine_config(user: Mapping[str, Any] | None, *, micro_batch: int, world: int, grad_clip: float | None,
                  clip_scale: float = 1.0, zero_stage: int | None = None) -> dict[str, Any]:
    """DeepSpeed's config for one engine: a copy of the user's config with the fields curate must own set on top.

    Kept from the user: everything else (``zero_optimization`` offload and bucket settings, ``bf16``, ...).
    Set by curate: the batch sizes (from ``micro_batch`` and ``world``), ``gradient_clipping`` (``grad_clip``
    times ``clip_scale``: 1 for u, α for w), and the flags that let its torch AdamW in (curate owns the optimizer
    and its schedule). The ZeRO stage is :func:`zero_stage_of`. A user may repeat a batch or clipping field only
    with curate's value (for clipping: ``grad_clip``) or ``"auto"``; ``optimizer``/``scheduler`` are refused.

    Raises:
        ValueError: naming the user's key and the fix.
    """
    owned: dict[str, tuple[Any, str]] = {  # key: (curate's value, the curate key that sets it)
        "train_micro_batch_size_per_gpu": (micro_batch, f"batch_size (split over {world} ranks)"),
        "gradient_accumulation_steps": (1, "batch_size (one step per global batch)"),
        "train_batch_size": (micro_batch * world, f"batch_size (rounded up to {world} ranks)"),
        "gradient_clipping": (grad_clip, "grad_clip (w clips at alpha * grad_clip)")}
    config = copy.deepcopy(dict(user or {}))
    _check_user_config(config, owned)
    zero = config.get("zero_optimization") or {}
    if not isinstance(zero, Mapping):
        raise ValueError(f"'zero_optimization' must be a mapping, got {zero!r}")
    config["zero_optimization"] = {**zero, "stage": zero_stage_of(config, zero_stage)}
    config.update({k: v for k, (v, _) in owned.items()})
    if grad_clip is None:
        del config["gradient_clipping"]
    else:
        config["gradient_clipping"] = grad_clip * clip_scale
    # curate passes its own torch AdamW: DeepSpeed refuses it without these (with offload it asks for CPUAdam)
    config.update({"zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False})
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


_REFUSED = {"optimizer": "curate trains u and w with its own AdamW; remove the block and set lr_model and "
                         "weight_decay instead",
            "scheduler": "curate owns the learning-rate schedule; remove the block and set schedule and "
                         "warmup_ratio instead"}


def _check_user_config(config: Mapping[str, Any], owned: Mapping[str, tuple[Any, str]]) -> None:
    """Refuse what would silently fight curate: its optimizer and schedule, other batch sizes, other clipping,
    and Hugging Face Trainer ``"auto"`` placeholders that DeepSpeed alone cannot fill."""
    for key, why in _REFUSED.items():
        if key in config:
            raise ValueError(f"{key!r}: {why}")
    for key, (value, source) in owned.items():
        got = config.get(key, "auto")
        if got != "auto" and got != value:
            raise ValueError(f"{key!r} is {got!r} but curate sets {value!r} from {source}; remove the key (or "
                             f"make it \"auto\") and set {source.split()[0]} in curate's config instead")
    for path in _auto_keys(config):
        if path not in owned:
            raise ValueError(f"{path!r} is \"auto\", which only Hugging Face's Trainer fills in; set a value or "
                             "remove the key")


def _auto_keys(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            found += _auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            found.append(f"{prefix}{key}")
    return found


def _engine(model: nn.Module, lr: float, weight_decay: float, config: dict[str, Any]) -> Any:
    import deepspeed

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def _copy(model: nn.Module, checkpointing: bool) -> nn.Module:
    """An independent copy of the base model for u or w, in train mode (the training passes run so whatever mode
    ``model`` arrived in; the target pass switches by ``eval_mode``), with gradient checkpointing when asked for."""
    copied = copy.deepcopy(model).train()
    if checkpointing:
        enable_checkpointing(copied)
    return copied


def _set_lr(engine: Any, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def _sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


def _shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    return {k: v[rank::world] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def fit_distributed(model: nn.Module, train: BatchSampler, val: BatchSampler, cfg: ScaleBiOConfig, *,
                    zero_stage: int | None = None, ds_config: Mapping[str, Any] | None = None,
                    on_step: Callable[[dict[str, float]], None] | None = None) -> ScaleBiOResult:
    """:func:`solvers.scalebio.fit` across the ranks of a torchrun job (call it on every rank, same arguments).

    Returns the same result on every rank (weights, averaged weights, trajectory of global-batch statistics);
    ``model`` of the result is w's module (under ZeRO-3 its parameters are partitioned across ranks).
    ``ds_config`` is the user's DeepSpeed config (offload, buckets, ...), merged by :func:`engine_config`;
    ``zero_stage`` overrides its ``zero_optimization.stage`` (default: that stage, else 2).

    Raises:
        ValueError: an unsupported config (see the module docstring), a ``ds_config`` key curate owns, or a global
            batch smaller than the world.
        NonFiniteLossError: a global loss became NaN/inf.
    """
    stage = zero_stage_of(ds_config, zero_stage)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0..3, got {stage}")
    for bad, what in ((cfg.lisa, "lisa"), (cfg.lower_level != "full", "lower_level='lora'"),
                      (cfg.stages > 1 and cfg.tau != 1, "growing alpha (stages > 1)"),
                      (cfg.autocast_bf16, "autocast_bf16")):
        if bad:
            raise ValueError(f"the DeepSpeed engine does not support {what}; run single-process")
    rank, world = init()
    device = next(model.parameters()).device
    sources = list(train.data.sources)
    _check_inputs(train, val, cfg, sources, device)
    if min(cfg.batch_size, cfg.val_batch_size) < world:
        raise ValueError(f"batch_size and val_batch_size must be >= the {world} ranks")
    k = len(sources)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        u, w = (_engine(_copy(model, cfg.gradient_checkpointing), cfg.lr_model, cfg.weight_decay,
                        engine_config(ds_config, micro_batch=math.ceil(cfg.batch_size / world), world=world,
                                      grad_clip=cfg.grad_clip, clip_scale=scale, zero_stage=stage))
                for scale in (1.0, cfg.alpha))  # u clips at grad_clip, w at alpha * grad_clip
        logits = torch.zeros(k, dtype=torch.float32, requires_grad=True)
        opt_lambda = torch.optim.AdamW([logits], lr=cfg.lr_lambda, weight_decay=cfg.lambda_weight_decay)
        state = SolverState(u, w, logits, u.optimizer, w.optimizer, opt_lambda)
        run = _Run(state, None, train, val, sources, cfg)
        while run.step < cfg.steps:
            row = _step(run, rank, world)
            if on_step is not None:
                on_step(row)
    return _result(run)


def _step(run: _Run, rank: int, world: int) -> dict[str, float]:
    """One Jacobi update of u, w and λ on this rank's slice of the global batches."""
    cfg, t, s = run.cfg, run.step, run.state
    u: Any = s.u  # DeepSpeed engines
    w: Any = s.w
    k = len(run.sources)
    started = time.perf_counter()
    alpha, lr_scale = schedule.alpha(t, cfg), schedule.lr_scale(t, cfg)
    full_train, full_val = run.train.next(), run.val.next()
    train, val = _shard(full_train, rank, world), _shard(full_val, rank, world)
    p = weights(s.logits)
    ids = train["source_ids"]
    # c_s over the global batch, counting only rows with a label token (objective.source_means)
    counts = _sum(torch.zeros(k).index_add(0, ids, label_rows(train).float())).clamp_min(1)
    tokens = _sum((val["labels"][:, 1:] != IGNORE).sum().float()).clamp_min(1)

    def local_sums(engine: Any) -> torch.Tensor:
        nll, valid = token_losses(engine, train)
        per_example = nll.sum(1) / valid.sum(1).clamp_min(1)
        return torch.zeros(k, dtype=per_example.dtype).index_add(0, ids, per_example)

    sums_u = local_sums(u)
    lbar_u = _finite(_sum(sums_u.detach()) / counts, t)
    u.backward(world * (p.detach() @ (sums_u / counts)))
    sums_w = local_sums(w)
    lbar_w = _finite(_sum(sums_w.detach()) / counts, t)
    was = w.module.training
    w.module.train(not cfg.eval_mode)
    nll, _ = token_losses(w, val)
    w.module.train(was)
    target = _finite(_sum(nll.sum().detach()) / tokens, t)
    w.backward(world * (alpha * (p.detach() @ (sums_w / counts)) + nll.sum() / tokens))
    s.logits.grad = None
    (alpha * (p @ ((sums_w - sums_u).detach() / counts))).backward()
    grad = s.logits.grad
    assert grad is not None
    dist.all_reduce(grad)  # each rank held its slice's share
    norm_lambda = float(grad.norm())
    _finite(grad, t)
    for engine in (u, w):
        _set_lr(engine, lr_scale * cfg.lr_model)
        engine.step()
    for group in s.opt_lambda.param_groups:
        group["lr"] = lr_scale * cfg.lr_lambda
    s.opt_lambda.step()
    p = p.detach()
    metrics = {"p": p.tolist(), "loss_u": lbar_u.tolist(), "loss_w": lbar_w.tolist(), "target_loss": float(target),
               "gap": float(p @ (lbar_w - lbar_u)), "grad_norm_u": _norm(u), "grad_norm_w": _norm(w),
               "grad_norm_lambda": norm_lambda,
               "tokens": int(full_train["attention_mask"].sum() + full_val["attention_mask"].sum())}
    present = torch.bincount(full_train["source_ids"], minlength=k).tolist()
    row = _row(run.sources, metrics, present, time.perf_counter() - started)
    row = {"step": t, "stage": schedule.stage(t, cfg), "alpha": alpha, "lr_scale": lr_scale, **row}
    run.trajectory.append(row)
    run.step += 1
    return row


def _norm(engine: Any) -> float:
    norm = engine.get_global_grad_norm()
    return math.nan if norm is None else float(norm)


def _finite(x: torch.Tensor, step: int) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteLossError(step)
    return x
