"""One simultaneous ScaleBiO update of u, w and λ (ALGORITHMS.md §1.7, §2).
 On one training batch B (shared by u and w) and one target batch V, with everything evaluated at the current
point:

- u descends L2(λ, u)                    (the training-optimal copy),
- w descends L1(w) + α·L2(λ, w)          (fits the target while staying near-optimal for L2),
- λ descends α·[L2(λ, w) − L2(λ, u)]     (gradient α·J(p)(ℓ̄(w) − ℓ̄(u)), §1.7).
 That is the gradient of :func:`solvers.scalebio.objective.surrogate`. Its terms touch disjoint graphs, so
they are backpropagated one at a time (u's pass, w's training pass, w's target pass, then λ from the detached
means): the gradients are identical to a single backward of the sum, while only one pass's activations are
alive at a time. All three gradients exist before any optimizer steps, so the update is Jacobi-style, as in
the authors' code.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from solvers.device import bf16_autocast
from solvers.lm import IGNORE, label_rows, per_example_loss, token_mean_loss
from solvers.scalebio.engine import LOCAL, Engine
from solvers.scalebio.objective import source_counts, source_sums
from solvers.scalebio.simplex import weights

if TYPE_CHECKING:
    from solvers.lora import LoraSpec

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
"""``(model, batch) -> loss``: per-example losses ``[B]`` for the training pass, a scalar for the target
pass."""


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf; nothing was updated in that step."""

    def __init__(self, step: int, what: str = "loss", updated: bool = False) -> None:
        self.step = step
        done = ("the models were stepped before it was found (DeepSpeed clips inside its step), but"
                if updated else "no parameter was updated in this step and")
        super().__init__(
            f"non-finite {what} at step {step}: {done} no checkpoint was written after it, so the last "
            "checkpoint on disk is the last good state. Lower lr_model / lr_lambda, enable grad_clip, or check "
            "the data of that step."
        )


@dataclass
class SolverState:
    """The trainable state of a run: the two model copies, the logits and their three AdamW optimizers."""

    u: nn.Module
    w: nn.Module
    logits: torch.Tensor
    opt_u: torch.optim.Optimizer
    opt_w: torch.optim.Optimizer
    opt_lambda: torch.optim.Optimizer


@dataclass
class StepLosses:
    """Detached batch statistics of one step, computed at the pre-update point."""

    p: torch.Tensor
    lbar_u: torch.Tensor
    lbar_w: torch.Tensor
    target_loss: torch.Tensor


def init_state(model: nn.Module, n_sources: int, lr_model: float, lr_lambda: float, weight_decay: float,
               lambda_weight_decay: float, lora: LoraSpec | None = None, consume: bool = False) -> SolverState:
    """u and w as two independent deep copies of ``model``, λ = 0 (uniform weights), one AdamW each.

    With ``lora``, u and w are instead two LoRA adapters over one frozen deep copy of ``model``
    (:mod:`solvers.scalebio.lora`), and their optimizers hold the adapter weights only. ``consume``: u is
    ``model`` itself (the LoRA base, under ``lora``) rather than a copy, which saves one model's memory; the
    caller's model is then trained in place.
    λ is fp32 (fp64 for an fp64 model) on the model's device whatever the model's dtype.
    """
    u, w = model_pair(model, lora, consume)
    logits = new_logits(n_sources, model)
    return SolverState(
        u=u, w=w, logits=logits,
        opt_u=torch.optim.AdamW(u.parameters(), lr=lr_model, weight_decay=weight_decay),
        opt_w=torch.optim.AdamW(w.parameters(), lr=lr_model, weight_decay=weight_decay),
        opt_lambda=torch.optim.AdamW([logits], lr=lr_lambda, weight_decay=lambda_weight_decay),
    )


def model_pair(model: nn.Module, lora: LoraSpec | None = None, consume: bool = False) -> tuple[nn.Module, nn.Module]:
    """u and w as :func:`init_state` describes them (deep copies, or two adapters over one base; ``consume``: u
    is ``model`` itself), for any engine to wrap."""
    if lora is not None:
        from solvers.scalebio.lora import lora_pair

        return lora_pair(model, lora, consume=consume)
    w = copy.deepcopy(model)
    return (model if consume else copy.deepcopy(model)), w


def new_logits(n_sources: int, model: nn.Module) -> torch.Tensor:
    """λ = 0 (uniform weights): fp32 (fp64 for an fp64 model) on the model's device whatever its dtype."""
    ref = next(model.parameters())
    dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    return torch.zeros(n_sources, dtype=dtype, device=ref.device, requires_grad=True)


def accumulate_grads(state: SolverState, train_batch: Batch, val_batch: Batch, alpha: float, n_sources: int,
                     *, step: int = 0,
                     per_example_loss_fn: LossFn = per_example_loss, target_loss_fn: LossFn = token_mean_loss,
                     eval_mode: bool = True, autocast_bf16: bool = False, engine: Engine = LOCAL) -> StepLosses:
    """Write ∂surrogate/∂x into ``x.grad`` for x in u, w, λ (grads are reset first); no parameter changes.

    On several ranks (``engine``), the batches are this rank's slices of the global batches and every estimator
    is the global batch's (ALGORITHMS.md §2.1, the research4pan form): the per-source row counts c_s and the
    target's label-token count are summed over ranks; each rank backpropagates ``world · Σ_s p_s · (its loss
    sum of source s) / c_s``, so the engines' gradient *average* over ranks is the global-batch gradient; its
    target loss enters with weight ``world · (its label tokens) / (all label tokens)``, which makes the global
    L1 the token mean over the global batch for the default token-mean loss; λ's gradient is the sum of the
    ranks' shares. With one process all of it is the identity.

    Args:
        state: models, logits and optimizers.
        train_batch: batch B with ``source_ids``, passed to ``per_example_loss_fn`` for both u and w.
        val_batch: target batch V, passed to ``target_loss_fn`` for w.
        alpha: penalty α.
        n_sources: K.
        step: step index, only for the error message.
        per_example_loss_fn: per-example training loss ``[B]``; response-token mean NLL by default.
        target_loss_fn: scalar target loss L1; token-mean NLL over V by default.
        eval_mode: compute L1 with w in eval mode (no dropout); else in train mode. The two training passes
            always run in train mode, whatever mode the models arrived in (``from_pretrained`` returns eval
            mode), and each model is left in the mode it had.
        autocast_bf16: run the model passes under CUDA bf16 autocast.
        engine: where the step runs (:mod:`solvers.scalebio.engine`); one process by default.

    Raises:
        NonFiniteLossError: a (global) loss is NaN/inf (checked before its backward, on every rank alike).
    """
    for model in (state.u, state.w):
        engine.zero_grad(model)
    state.logits.grad = None
    p = weights(state.logits)
    source_ids, has_labels = train_batch["source_ids"], label_rows(train_batch)
    counts = engine.sum(source_counts(source_ids, n_sources, has_labels)).clamp_min(1)
    world = engine.world
    with bf16_autocast(autocast_bf16), _mode(state.u, train=True):
        share_u = _group_scaled(source_sums(per_example_loss_fn(state.u, train_batch), source_ids, n_sources,
                                            has_labels) / counts, train_batch)
    lbar_u = _finite(engine.sum(share_u.detach()), step)
    engine.backward(state.u, _times(world, p.detach().to(share_u.dtype) @ share_u))
    with bf16_autocast(autocast_bf16), _mode(state.w, train=True):
        share_w = _group_scaled(source_sums(per_example_loss_fn(state.w, train_batch), source_ids, n_sources,
                                            has_labels) / counts, train_batch)
    lbar_w = _finite(engine.sum(share_w.detach()), step)
    engine.backward(state.w, _times(world, alpha * (p.detach().to(share_w.dtype) @ share_w)), final=False)
    with bf16_autocast(autocast_bf16), _mode(state.w, train=not eval_mode):
        target_local = target_loss_fn(state.w, val_batch)
    if world == 1:
        target = _finite(target_local, step)
        engine.backward(state.w, target)
    else:
        weight = world * _label_tokens(val_batch) / engine.sum(_label_tokens(val_batch)).clamp_min(1)
        weighted = target_local * weight
        target = _finite(engine.sum(weighted.detach()) / world, step)
        engine.backward(state.w, weighted)
    (alpha * (p @ (share_w - share_u).detach().to(p.dtype))).backward()
    if state.logits.grad is not None:
        engine.sum_grad_(state.logits.grad)  # each rank held its slice's share
    return StepLosses(p.detach(), lbar_u, lbar_w, target.detach())


def _times(world: int, loss: torch.Tensor) -> torch.Tensor:
    """``world · loss`` on several ranks (their gradients are averaged), ``loss`` itself on one."""
    return loss if world == 1 else world * loss


def _label_tokens(batch: Batch) -> torch.Tensor:
    """The batch's label tokens (rows if it has no labels), as a float scalar for the target's share."""
    if "labels" not in batch:
        ref = batch["source_ids"] if "source_ids" in batch else next(iter(batch.values()))
        return torch.tensor(float(len(ref)), device=ref.device)
    return (batch["labels"][:, 1:] != IGNORE).sum().float()


def _group_scaled(lbar: torch.Tensor, batch: Batch) -> torch.Tensor:
    """ℓ̄ times the batch's ``group_scale`` (K / groups per batch, when the sampler draws groups): the absent
    groups' 0s stay 0, and Σ_s p_s ℓ̄_s is then an unbiased estimate of the full sum (Horvitz-Thompson)."""
    scale = batch.get("group_scale")
    return lbar if scale is None else lbar * float(scale)


def scalebio_step(state: SolverState, train_batch: Batch, val_batch: Batch, *,
                  alpha: float, lr_model: float, lr_lambda: float, lr_scale: float = 1.0,
                  grad_clip: float | None = 1.0, n_sources: int, step: int = 0,
                  per_example_loss_fn: LossFn = per_example_loss, target_loss_fn: LossFn = token_mean_loss,
                  eval_mode: bool = True, autocast_bf16: bool = False, engine: Engine = LOCAL) -> dict[str, Any]:
    """One Jacobi update: gradients at the current point, clip, then one AdamW step each for u, w and λ.

    The learning rates are ``lr_scale · lr_model`` (u, w) and ``lr_scale · lr_lambda`` (λ). Clipping bounds
    ||∇u|| by ``grad_clip`` and ||∇w|| by ``alpha · grad_clip``. Other arguments are those of
    :func:`accumulate_grads`; on several ranks the batches are this rank's slices and every metric is the
    global batch's.

    Returns:
        Plain metrics of the pre-update point: ``p``, ``loss_u``, ``loss_w`` (per-source batch means, lists),
        ``target_loss``, ``gap`` (L2(λ,w) − L2(λ,u) on B), pre-clip ``grad_norm_u``/``_w``/``_lambda`` and
        ``tokens`` (non-padding tokens of B and V).

    Raises:
        NonFiniteLossError: a loss or gradient norm is NaN/inf; then no parameter was updated (on one process;
            DeepSpeed clips inside its step, so there a non-finite model gradient is found after it).
    """
    losses = accumulate_grads(state, train_batch, val_batch, alpha, n_sources, step=step,
                              per_example_loss_fn=per_example_loss_fn, target_loss_fn=target_loss_fn,
                              eval_mode=eval_mode, autocast_bf16=autocast_bf16, engine=engine)
    norm_lambda = clip([state.logits], None, step)
    norm_u, norm_w = engine.update([(state.u, state.opt_u, grad_clip),
                                    (state.w, state.opt_w, None if grad_clip is None else alpha * grad_clip)],
                                   lr_scale * lr_model, step)
    set_lr(state.opt_lambda, lr_scale * lr_lambda)
    state.opt_lambda.step()
    tokens = _tokens(train_batch) + _tokens(val_batch)
    if engine.world > 1:
        tokens = int(engine.sum(torch.tensor(float(tokens), device=state.logits.device)))
    return {
        "p": losses.p.tolist(), "loss_u": losses.lbar_u.tolist(), "loss_w": losses.lbar_w.tolist(),
        "target_loss": float(losses.target_loss),
        "gap": float(losses.p @ (losses.lbar_w - losses.lbar_u).to(losses.p.dtype)),
        "grad_norm_u": norm_u, "grad_norm_w": norm_w, "grad_norm_lambda": norm_lambda,
        "tokens": tokens,
    }


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the schedule scales all of them alike)."""
    for group in opt.param_groups:
        group["lr"] = lr


def _finite(loss: torch.Tensor, step: int) -> torch.Tensor:
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteLossError(step)
    return loss


def clip(params: Iterable[torch.Tensor], max_norm: float | None, step: int) -> float:
    """Pre-clip total gradient norm of ``params``, clipped in place to ``max_norm`` (None: no clipping).

    Raises:
        NonFiniteLossError: the norm is NaN/inf (checked before anything is scaled or stepped).
    """
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    total = torch.nn.utils.get_total_norm([p.grad for p in with_grad if p.grad is not None])
    if not math.isfinite(float(total)):
        raise NonFiniteLossError(step, "gradient")
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, total)
    return float(total)


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else len(next(iter(batch.values())))


@contextlib.contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)
