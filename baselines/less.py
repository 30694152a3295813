"""LESS: influence-aware data selection by Adam-preconditioned LoRA gradient similarity (ALGORITHMS.md A.1).

Xia et al., ICML 2024. The four steps, at the scale of this toolkit:

1. **Warmup.** Train LoRA adapters (attention projections, found generically) on a random
   ``warmup_fraction`` of the pool for ``warmup_epochs`` epochs (AdamW without weight decay, linear warmup
   then linear decay). After each epoch keep a checkpoint: the LoRA weights, *our own* Adam moments keyed by
   parameter name (LESS issue #4), and the epoch's mean learning rate η̄_i.
2. **Train features.** For every pool example x and checkpoint i, the per-example LoRA gradient g, batched
   with ``torch.func`` (``vmap(grad(functional_call))``, not a loop: LESS issues #7/#42), turned into Adam's
   update direction Γ = m'/sqrt(v'+ε) with m' = β1·m_i + (1−β1)·g, v' = β2·v_i + (1−β2)·g² (no bias
   correction, as LESS), projected by a seeded Rademacher matrix (``baselines.projection``) and
   L2-normalised: φ_i(x).
3. **Target features.** The same for each target example v, but with the plain gradient: ψ_i(v).
4. **Score.** Inf(x) = max_t Σ_i η̄_i ⟨φ_i(x), mean_{v∈V_t} ψ_i(v)⟩ with the η̄ renormalised to sum to 1; tasks
   t are the target's sources when ``tasks="by_source"``, else the whole target set is one task. Keep the top
   ``select_fraction`` of the pool.

Because the score is linear in the target mean, the pool is streamed: features are never stored, only the
``[N, tasks]`` score table. Memory is bounded by ``feature_buffer_mb`` (unprojected gradients awaiting
projection) plus one ``proj_chunk_rows × proj_dim`` slice of the projection matrix.

All four steps run where ``model`` is: the LoRA copy, the warmup, the per-example gradients, the projection
matrix (drawn on that device, :mod:`baselines.projection`) and the score table. ``autocast_bf16`` (CUDA) runs the
warmup's and the gradients' forward passes under bf16 autocast; the LoRA weights, their gradients, the Adam
moments, the features and the scores stay fp32.

**Across ranks.** Called inside an initialised ``torch.distributed`` group of ``world > 1`` processes (``curate
reweight --method less --launcher deepspeed --nproc N``, or a user's own ``torchrun`` script), steps 2–3 are data
parallel and the result is the one-process result:

- *Warmup:* rank 0 alone trains (or reads the stored warmup) and broadcasts the checkpoints; the other ranks wait.
  Its wall time is the one-process warmup's (5 % of the pool); re-running the seeded warmup on every rank would
  cost the same but could drift on a GPU (non-deterministic kernels), which a broadcast rules out.
- *Features:* the feature groups (the chunks above, cut to at most ~N/(4·world) rows so that every rank gets
  about four) go round-robin to the ranks; target features are all-gathered (every rank needs the whole ψ̄),
  pool features are reduced on their rank to the group's ``[rows, tasks]`` score contribution, which is
  all-gathered, so no rank ever holds another's ``[rows, proj_dim]`` features. Each row's gradient is taken in the
  same batch as in one process; only the projection pass sees fewer rows at once, so features agree to fp32
  rounding of that matmul (observed: bitwise on CPU, ``tests/baselines/test_less_distributed.py``).
- *Resume:* every rank stores its finished chunks in the same ``checkpoint_dir`` (rank 0 decides which are still
  to do and reads the stored ones), keyed by first row, so a run killed on N ranks continues on N; chunks cut for
  another grouping carry their row count in the key and are recomputed, never misread.

Measured on 2 CPU cores shared with other jobs (load ~4), one thread per rank, ``tests/baselines/less_worker.py``
with 400 rows per source (1,200 rows, tiny Llama hidden 32, LoRA 4,096 parameters, d = 256), best of 3: one pool
feature pass 4.07 s on 1 process, 1.99 s on 2 gloo ranks (2.0x; the other rounds 4.6-5.0 s against 4.0-4.2 s);
``run_less`` as a whole 8.1 s against 6.6 s (the warmup is rank 0's alone, and each process also starts torch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from baselines.base import (
    MethodResult,
    StepCallback,
    check_choice,
    check_counts,
    check_fraction,
    check_int,
    check_pool,
    check_positive,
    example_result,
    n_selected,
    require_inputs,
    selection_weights,
)
from baselines.parts import Parts, load_state, save_state
from baselines.projection import Projector, make_projector
from baselines.scoring import subset
from solvers.common import top_k
from solvers.common.io import atomic_path
from solvers.data import TokenizedSet
from solvers.device import bf16_autocast, check_autocast, model_device, rng_devices
from solvers.lm import IGNORE, find_blocks, per_example_loss, token_mean_loss
from solvers.lora import LoraSpec, with_adapters

ATTENTION_HINTS = ("attn", "attention")


@dataclass(frozen=True)
class LessConfig:
    """Settings of the LESS baseline. Defaults follow the LESS repo except where noted for small models."""

    warmup_fraction: float = 0.05
    """Share of the pool (drawn at random with ``seed``) used to warm the LoRA adapters up."""
    warmup_min_rows: int = 32
    """Floor on the warmup set size, so tiny pools still warm up on something."""
    warmup_epochs: int = 4
    """Warmup epochs; one checkpoint (and one gradient pass over the pool) per epoch."""
    warmup_batch_size: int = 8
    """Examples per warmup step (LESS: 128 effective)."""
    lr: float = 2e-5
    """Peak warmup learning rate (LESS's value for 7B models; tiny models from scratch need about 1e-3)."""
    warmup_ratio: float = 0.03
    """Share of warmup steps with a linearly rising learning rate; the rest decays linearly to 0."""
    lora_r: int = 8
    """LoRA rank (LESS: 128 for 7B; 8–32 is the small-scale recipe)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (LESS keeps alpha = 4 r)."""
    lora_dropout: float = 0.1
    """LoRA dropout during warmup; gradient features are taken in eval mode, without dropout."""
    target_modules: tuple[str, ...] = ()
    """Leaf names of the modules to adapt; empty means the attention projections, found generically."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam β1, β2 of the warmup optimizer and of the preconditioner Γ."""
    adam_eps: float = 1e-8
    """Adam ε of the warmup optimizer and of the preconditioner Γ."""
    grad_batch_size: int = 16
    """Examples per vmapped per-example-gradient call."""
    proj_dim: int = 8192
    """Projected feature width d (LESS: 8192)."""
    proj_chunk_rows: int = 1024
    """Rows of the projection matrix resident at once (memory ≈ rows · proj_dim · 4 bytes)."""
    projector: Literal["auto", "torch"] = "auto"
    """``auto``: TRAK's CUDA kernel when installed and on GPU, else the chunked torch projector."""
    feature_buffer_mb: float = 256.0
    """Budget for unprojected per-example gradients gathered before one projection pass."""
    tasks: Literal["single", "by_source"] = "single"
    """``by_source``: each target source is a task and the score is the max over tasks (LESS's subtasks)."""
    select_fraction: float = 0.05
    """Share of the pool kept (top by score); ``weights`` are the per-source shares of that selection."""
    seed: int = 0
    """Seeds the warmup subset, batch order, LoRA init and the projection matrix."""
    checkpoint_dir: str | None = None
    """When set, each epoch's checkpoint (LoRA weights, Adam moments by name, mean lr) is also saved here."""
    autocast_bf16: bool = False
    """Model passes under CUDA bf16 autocast (curate turns it on for a GPU ``device``); CUDA only."""

    def __post_init__(self) -> None:
        check_fraction("warmup_fraction", self.warmup_fraction)
        check_fraction("select_fraction", self.select_fraction)
        for name in (
            "warmup_min_rows",
            "warmup_epochs",
            "warmup_batch_size",
            "lora_r",
            "grad_batch_size",
            "proj_dim",
            "proj_chunk_rows",
        ):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_int("lora_alpha", self.lora_alpha, 1)
        for name in ("lr", "adam_eps", "feature_buffer_mb"):
            check_positive(name, getattr(self, name))
        check_fraction("warmup_ratio", self.warmup_ratio, low_open=False)
        check_fraction("lora_dropout", self.lora_dropout, low_open=False)
        if len(self.adam_betas) != 2 or not all(
            isinstance(b, int | float) and 0 <= b < 1 for b in self.adam_betas
        ):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if any(not isinstance(m, str) or not m for m in self.target_modules):
            raise ValueError(f"target_modules must be non-empty strings, got {self.target_modules!r}")
        check_choice("projector", self.projector, ("auto", "torch"))
        check_choice("tasks", self.tasks, ("single", "by_source"))


@dataclass
class Checkpoint:
    """One warmup epoch's end state: what LESS step 2 needs, keyed by LoRA parameter name."""

    epoch: int
    lora: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    mean_lr: float


def lora_target_modules(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the attention of the first decoder block (q/k/v/o for Llama).

    Found generically: linear (or GPT-2 ``Conv1D``) modules whose path inside the block mentions ``attn`` or
    ``attention``; when a block has none, every linear leaf of the block.
    """
    block = find_blocks(model)[0]
    linear = [
        name
        for name, m in block.named_modules()
        if name and (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D")
    ]
    attn = [n for n in linear if any(h in n.lower() for h in ATTENTION_HINTS)]
    return sorted({n.rsplit(".", 1)[-1] for n in (attn or linear)})


def lora_spec(model: nn.Module, cfg: LessConfig) -> LoraSpec:
    """The adapters LESS warms up, as the project's one LoRA settings type (empty targets: found generically)."""
    targets = tuple(cfg.target_modules) or tuple(lora_target_modules(model))
    return LoraSpec(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=targets,
                    seed=cfg.seed)


def add_lora(model: nn.Module, cfg: LessConfig) -> nn.Module:
    """A deep copy of ``model`` with fresh LoRA adapters (seeded); only the adapters require grad."""
    return with_adapters(model, lora_spec(model, cfg))


def lora_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters of ``model`` by name, detached, in ``named_parameters`` order."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total`` (the HF 'linear' schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def warmup(
    model: nn.Module, data: TokenizedSet, cfg: LessConfig, on_step: StepCallback | None = None
) -> list[Checkpoint]:
    """LESS step 1: train ``model``'s LoRA adapters on ``data`` in place; one checkpoint per epoch."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(
        list(params.values()), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=0.0
    )
    per_epoch = math.ceil(len(data) / cfg.warmup_batch_size)
    total = per_epoch * cfg.warmup_epochs
    n_warm = math.ceil(cfg.warmup_ratio * total)
    rng = np.random.default_rng(cfg.seed)
    device = model_device(model)
    check_autocast(cfg.autocast_bf16, device, "less")
    checkpoints, step = [], 0
    model.train()
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(cfg.seed)
        for epoch in range(cfg.warmup_epochs):
            order, lrs = rng.permutation(len(data)), []
            for start in range(0, len(data), cfg.warmup_batch_size):
                lr = cfg.lr * _lr_at(step, total, n_warm)
                for group in opt.param_groups:
                    group["lr"] = lr
                batch = data.batch(order[start : start + cfg.warmup_batch_size].tolist())
                with bf16_autocast(cfg.autocast_bf16):
                    loss = token_mean_loss(model, {k: v.to(device) for k, v in batch.items()})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lrs.append(lr)
                if on_step is not None:
                    on_step(
                        {
                            "stage": "less_warmup",
                            "step": step,
                            "epoch": epoch,
                            "loss": loss.detach().item(),
                            "lr": lr,
                        }
                    )
                step += 1
            checkpoints.append(_snapshot(epoch, params, opt, float(np.mean(lrs)), cfg.checkpoint_dir))
    model.eval()
    return checkpoints


def _snapshot(
    epoch: int,
    params: Mapping[str, nn.Parameter],
    opt: torch.optim.Optimizer,
    mean_lr: float,
    directory: str | None,
) -> Checkpoint:
    def state(key: str) -> dict[str, torch.Tensor]:
        return {
            n: opt.state[p][key].detach().clone() if p in opt.state else torch.zeros_like(p)
            for n, p in params.items()
        }

    ckpt = Checkpoint(
        epoch,
        {n: p.detach().clone() for n, p in params.items()},
        state("exp_avg"),
        state("exp_avg_sq"),
        mean_lr,
    )
    if directory is not None:
        with atomic_path(Path(directory) / f"less_epoch{epoch}.pt") as tmp:
            torch.save(vars(ckpt), tmp)
    return ckpt


def _one_example_loss(
    model: nn.Module, params: dict[str, torch.Tensor], input_ids: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    # No attention mask: with right padding and a causal model, pads come after every real token and so cannot
    # change a real token's logits. Passing the mask would send HF's mask builders (sdpa's "is the mask all
    # ones?" check) into data-dependent control flow, which vmap cannot trace.
    def forward(**kwargs: torch.Tensor) -> object:
        return functional_call(model, params, (), kwargs)

    batch = {"input_ids": input_ids[None], "attention_mask": None, "labels": labels[None]}
    return per_example_loss(forward, batch)[0]  # type: ignore[arg-type]


def per_example_grads(
    model: nn.Module, params: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Gradient of each example's response-token-mean loss w.r.t. ``params``, flattened: ``[B, Σ numel]``.

    One ``vmap(grad(...))`` call over the batch (``torch.func``); ``model`` should be in eval mode. Parameters
    not in ``params`` are taken from ``model`` and treated as constants. The batch must be right-padded (what
    :func:`solvers.lm.collate` produces), so the forward pass needs no attention mask.

    Raises:
        ValueError: when ``attention_mask`` shows left padding or holes.
    """
    mask = batch["attention_mask"]
    if bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("per_example_grads needs right-padded batches (attention_mask like 1..1 0..0)")
    fn = vmap(grad(partial(_one_example_loss, model)), in_dims=(None, 0, 0))
    grads = fn(params, batch["input_ids"], batch["labels"])
    return torch.cat([grads[n].reshape(batch["input_ids"].size(0), -1) for n in params], dim=1)


def per_example_grads_loop(
    model: nn.Module, params: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Reference for :func:`per_example_grads`: one unpadded autograd call per example (tests, benchmark)."""
    rows = []
    for i in range(batch["input_ids"].size(0)):
        n = int(batch["attention_mask"][i].sum())
        live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        loss = _one_example_loss(model, live, batch["input_ids"][i, :n], batch["labels"][i, :n])
        grads = torch.autograd.grad(loss, list(live.values()), allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, live.values(), strict=True)
                ]
            )
        )
    return torch.stack(rows)


def adam_direction(
    g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, betas: tuple[float, float], eps: float
) -> torch.Tensor:
    """Γ = m'/sqrt(v'+ε), m' = β1 m + (1−β1) g, v' = β2 v + (1−β2) g² (LESS, without bias correction)."""
    m = betas[0] * exp_avg + (1 - betas[0]) * g
    v = betas[1] * exp_avg_sq + (1 - betas[1]) * g.square()
    return m / torch.sqrt(v + eps)


def _flat(state: Mapping[str, torch.Tensor], names: list[str], device: torch.device) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1) for n in names]).to(device)


SHARDS_PER_RANK = 4
"""Across ranks, feature groups are cut to about ``rows / (SHARDS_PER_RANK · world)`` rows, so that a pool that fits
one buffer still gives every rank work, and the ranks' loads differ by at most about one group in four."""


def feature_group(n: int, dim_in: int, cfg: LessConfig, world: int = 1) -> int:
    """Rows per projection pass (and per stored chunk) of an ``n``-row set: as many whole gradient batches as
    ``cfg.feature_buffer_mb`` holds; on ``world > 1`` ranks at most about ``n / (SHARDS_PER_RANK · world)``."""
    group = max(1, int(cfg.feature_buffer_mb * 2**20 // (4 * dim_in)) // cfg.grad_batch_size) * cfg.grad_batch_size
    if world > 1:
        share = math.ceil(n / (SHARDS_PER_RANK * world * cfg.grad_batch_size)) * cfg.grad_batch_size
        group = min(group, share)
    return group


def ranks() -> tuple[int, int]:
    """``(rank, world)`` of the initialised ``torch.distributed`` group, ``(0, 1)`` outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _others(mine: set[int]) -> Callable[[int], bool]:
    """``skip`` for :func:`features`: the groups whose first row is not in ``mine`` (another rank's)."""
    return lambda start: start not in mine


def _broadcast(obj: object) -> object:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather(local: dict[int, torch.Tensor], device: torch.device) -> dict[int, torch.Tensor]:
    """Every rank's ``{first row: values}`` on every rank (through the host: gloo carries any tensor)."""
    import torch.distributed as dist

    out: list[dict[int, torch.Tensor] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(out, {s: t.cpu() for s, t in local.items()})
    return {s: t.to(device) for d in out if d is not None for s, t in d.items()}


def gathered_features(
    model: nn.Module,
    data: TokenizedSet,
    ckpt: Checkpoint,
    projector: Projector,
    cfg: LessConfig,
    precondition: bool,
) -> torch.Tensor:
    """All of ``data``'s features ``[len(data), proj_dim]`` in row order (:func:`features`, collected).

    Inside a ``torch.distributed`` group of ``world > 1`` ranks each rank computes the groups ``k ≡ rank (mod
    world)`` and they are all-gathered, so every rank returns the one-process matrix (the same batches; only the
    projection's row count per pass differs, see the module docstring).
    """
    rank, world = ranks()
    group = feature_group(len(data), projector.dim_in, cfg, world)
    mine = set(range(0, len(data), group)[rank::world])
    done = {rows[0]: phi for rows, phi in features(model, data, ckpt, projector, cfg, precondition,
                                                   skip=_others(mine), group=group) if phi is not None}
    if world > 1:
        done = _all_gather(done, model_device(model))
    return torch.cat([done[s] for s in range(0, len(data), group)])


def features(
    model: nn.Module,
    data: TokenizedSet,
    ckpt: Checkpoint,
    projector: Projector,
    cfg: LessConfig,
    precondition: bool,
    skip: Callable[[int], bool] | None = None,
    group: int | None = None,
) -> Iterator[tuple[list[int], torch.Tensor | None]]:
    """Yield ``(rows, φ)``: projected, L2-normalised gradient features of ``data`` at checkpoint ``ckpt``.

    ``precondition=True`` gives the Adam direction Γ (train features), ``False`` the plain gradient (target
    features). Rows without response tokens get a zero feature. Gradients are buffered up to
    ``cfg.feature_buffer_mb`` before each projection pass, so the matrix is regenerated as rarely as memory
    allows (``group`` rows per pass; default :func:`feature_group`). A group whose first row ``skip`` accepts is
    not computed: it is yielded with ``None`` (its result was stored by an earlier run, or another rank owns it).
    """
    device = model_device(model)
    params = {n: ckpt.lora[n].to(device) for n in lora_params(model)}
    names = list(params)
    if precondition:
        m, v = _flat(ckpt.exp_avg, names, device), _flat(ckpt.exp_avg_sq, names, device)
    group = group or feature_group(len(data), projector.dim_in, cfg)
    for g_start in range(0, len(data), group):
        rows_g = list(range(g_start, min(len(data), g_start + group)))
        if skip is not None and skip(g_start):
            yield rows_g, None
            continue
        parts = []
        for start in range(0, len(rows_g), cfg.grad_batch_size):
            batch = {
                k: t.to(device) for k, t in data.batch(rows_g[start : start + cfg.grad_batch_size]).items()
            }
            with bf16_autocast(cfg.autocast_bf16):
                g = per_example_grads(model, params, batch)
            if precondition:
                g = adam_direction(g, m, v, cfg.adam_betas, cfg.adam_eps)
            g[~(batch["labels"][:, 1:] != IGNORE).any(dim=1)] = 0.0
            parts.append(g)
        phi = projector.project(torch.cat(parts))
        yield rows_g, phi / phi.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _task_rows(target: TokenizedSet, tasks: str) -> dict[str, np.ndarray]:
    if tasks == "single":
        return {"target": np.arange(len(target))}
    out = {name: np.flatnonzero(target.source_ids == s) for s, name in enumerate(target.sources)}
    return {name: rows for name, rows in out.items() if len(rows)}


def influence_scores(
    model: nn.Module,
    train: TokenizedSet,
    target: TokenizedSet,
    checkpoints: list[Checkpoint],
    cfg: LessConfig,
    checkpoint_dir: Path | None = None,
) -> tuple[torch.Tensor, dict[str, object]]:
    """LESS steps 2–4 for a LoRA-wrapped ``model``: the ``[N]`` scores max_t Σ_i η̄_i ⟨φ_i(x), ψ̄_{i,t}⟩, computed on
    the model's device and returned on the host. With ``checkpoint_dir`` each feature group's contribution is
    stored as it is done (:class:`baselines.parts.Parts`), and one stored by an earlier run is read instead."""
    device = model_device(model)
    dim_in = sum(p.numel() for p in lora_params(model).values())
    projector = make_projector(dim_in, cfg.proj_dim, cfg.seed, cfg.proj_chunk_rows, device, cfg.projector)
    lr_sum = sum(c.mean_lr for c in checkpoints)
    eta = [c.mean_lr / lr_sum if lr_sum > 0 else 1.0 / len(checkpoints) for c in checkpoints]
    tasks = _task_rows(target, cfg.tasks)
    table = torch.zeros(len(train), len(tasks), device=device)
    rank, world = ranks()
    group = feature_group(len(train), dim_in, cfg, world)
    starts = list(range(0, len(train), group))
    # chunks of another grouping (a run on another number of ranks) are not this pass's: they get their own key
    suffix = "" if group == feature_group(len(train), dim_in, cfg) else f"-rows{group}"
    model.eval()
    for i, (ckpt, eta_i) in enumerate(zip(checkpoints, eta, strict=True)):
        parts = Parts(checkpoint_dir, f"less-ckpt{i}{suffix}") if checkpoint_dir is not None else None
        psi = gathered_features(model, target, ckpt, projector, cfg, precondition=False)
        means = torch.stack(
            [psi[torch.as_tensor(rows, device=device)].mean(dim=0) for rows in tasks.values()]
        )
        pending = [s for s in starts if parts is None or not parts.has(s)]
        if world > 1:  # rank 0 decides, so that no rank sees a chunk another rank has just stored
            pending = _broadcast(pending)  # type: ignore[assignment]
        mine, stored = set(pending[rank::world]), set(starts) - set(pending)
        done: dict[int, torch.Tensor] = {}
        for rows, phi in features(model, train, ckpt, projector, cfg, precondition=True,
                                  skip=_others(mine), group=group):
            if phi is not None:
                done[rows[0]] = part = (eta_i * phi) @ means.T
                if parts is not None:
                    parts.put(rows[0], part)
            elif rows[0] in stored and rank == 0:  # stored by an earlier run
                assert parts is not None
                chunk = parts.get(rows[0])
                assert chunk is not None
                done[rows[0]] = torch.from_numpy(chunk).to(table)
        if world > 1:
            done = _all_gather(done, device)
        for start in starts:
            table[start : start + len(done[start])] += done[start]
    info = {
        "lora_params": dim_in,
        "lr_weights": eta,
        "checkpoint_lrs": [c.mean_lr for c in checkpoints],
        "tasks": list(tasks),
        "projector": type(projector).__name__,
        "projection_chunk_bytes": getattr(projector, "chunk_bytes", None),
    }
    if world > 1:
        info.update(ranks=world, feature_group_rows=group)
    return table.max(dim=1).values.cpu(), info


WARMUP_FILE = "less_warmup.pt"


def _on_host(c: Checkpoint) -> Checkpoint:
    def host(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in d.items()}

    return Checkpoint(c.epoch, host(c.lora), host(c.exp_avg), host(c.exp_avg_sq), c.mean_lr)


def warmup_rows(n: int, cfg: LessConfig) -> np.ndarray:
    """The seeded random rows of an ``n``-row pool used for warmup: max(fraction·n, min_rows), at most n."""
    size = min(n, max(cfg.warmup_min_rows, math.ceil(cfg.warmup_fraction * n)))
    return np.sort(np.random.default_rng(cfg.seed).choice(n, size=size, replace=False))


def run_less(
    cfg: LessConfig,
    *,
    counts: Mapping[str, int],
    model: nn.Module | None = None,
    train: TokenizedSet | None = None,
    target: TokenizedSet | None = None,
    on_step: StepCallback | None = None,
    checkpoint_dir: Path | None = None,
) -> MethodResult:
    """Registry entry for ``less``: warm up LoRA, score the whole pool, keep the top ``select_fraction``.

    With ``checkpoint_dir`` the warmup checkpoints and every scored feature group are stored as they are done, and
    a later call with the same inputs (``curate reweight --resume``) continues from them. Called on every rank of
    an initialised ``torch.distributed`` group, the ranks share the pool and each returns the one-process result
    (module docstring, "Across ranks").

    Args:
        cfg: the LESS settings.
        counts: examples per source; must match ``train``.
        model: the base causal LM (not modified; LoRA is added to a copy).
        train: the pool to score.
        target: the target (validation) examples whose gradients define "useful".
        on_step: receives one record per warmup step.

    Returns:
        Scores for every pool row, the selected ids (best first) and the per-source shares of the selection.
    """
    names = check_counts(counts)
    model, train, target = require_inputs("less", model=model, train=train, target=target)
    check_pool(counts, train)
    check_autocast(cfg.autocast_bf16, model_device(model), "less")
    wrapped = add_lora(model, cfg)
    rows_w = warmup_rows(len(train), cfg)
    rank, world = ranks()
    checkpoints: list[Checkpoint] = []
    if rank == 0:  # across ranks rank 0 alone warms up (or reads the stored warmup) and sends the checkpoints
        stored = load_state(checkpoint_dir, WARMUP_FILE)
        checkpoints = [Checkpoint(**c) for c in stored] if stored is not None else warmup(
            wrapped, subset(train, rows_w), cfg, on_step)
        save_state(checkpoint_dir, WARMUP_FILE, [dataclasses.asdict(c) for c in checkpoints])
    if world > 1:
        sent = _broadcast([_on_host(c) for c in checkpoints] if rank == 0 else None)
        checkpoints = checkpoints if rank == 0 else sent  # type: ignore[assignment]
    scores, info = influence_scores(wrapped, train, target, checkpoints, cfg, checkpoint_dir)
    order = top_k(scores, n_selected(len(train), cfg.select_fraction))
    info.update(
        warmup_rows=len(rows_w), target_modules=list(cfg.target_modules) or lora_target_modules(model)
    )
    return example_result(train, scores.tolist(), order, selection_weights(train, order, names), info)
