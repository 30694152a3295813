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

deepspeed is optional (``pip install 'curate[deepspeed]'``); this is the only module that imports it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from solvers.lm import IGNORE, token_losses
from solvers.scalebio import schedule
from solvers.scalebio.config import ScaleBiOConfig
from solvers.scalebio.loop import BatchSampler, ScaleBiOResult, _check_inputs, _result, _row, _Run
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


def _engine(model: nn.Module, lr: float, weight_decay: float, zero_stage: int, micro_batch: int, world: int,
            clip: float | None) -> Any:
    import deepspeed

    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch * world, "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "wall_clock_breakdown": False,
    }
    if clip is not None:
        config["gradient_clipping"] = clip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


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
                    zero_stage: int = 2, on_step: Callable[[dict[str, float]], None] | None = None) -> ScaleBiOResult:
    """:func:`solvers.scalebio.fit` across the ranks of a torchrun job (call it on every rank, same arguments).

    Returns the same result on every rank (weights, averaged weights, trajectory of global-batch statistics);
    ``model`` of the result is w's module (under ZeRO-3 its parameters are partitioned across ranks).

    Raises:
        ValueError: an unsupported config (see the module docstring), or a global batch smaller than the world.
        NonFiniteLossError: a global loss became NaN/inf.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0..3, got {zero_stage}")
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
        micro = math.ceil(cfg.batch_size / world)
        clip_w = None if cfg.grad_clip is None else cfg.alpha * cfg.grad_clip
        u = _engine(copy.deepcopy(model), cfg.lr_model, cfg.weight_decay, zero_stage, micro, world, cfg.grad_clip)
        w = _engine(copy.deepcopy(model), cfg.lr_model, cfg.weight_decay, zero_stage, micro, world, clip_w)
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
    counts = _sum(torch.bincount(ids, minlength=k).float()).clamp_min(1)  # c_s over the global batch
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
