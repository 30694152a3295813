"""The one supervised fine-tuning loop: the recipe every method's data is judged with, and the reference models.

`curate compare` trains the same base model on each method's selection and evaluates it on the target split;
the comparison is only fair if nothing but the data changes. So the defaults fix the recipe: AdamW with betas
(0.9, 0.95), linear warmup then cosine decay to 0, gradient clipping at 1.0, rows drawn uniformly over the given
set (``SourceSampler`` in proportional mode: the mixture *is* the data), and the response-token mean loss over
the batch (ALGORITHMS.md §1.4). Seeded runs are bit-for-bit repeatable on one device, and the global torch RNG
is left as it was found.

The baselines' reference models (RHO, DoReMi) run the same loop with the settings of the authors' code:
``schedule="constant"``, torch's default betas (0.9, 0.999), ``grad_clip=None``, decay on every parameter
(``decay_all=True``) and, for DoReMi's uniform reference, ``mode="stratified"``; see
:func:`baselines.scoring.fit_reference`. One loop, so a fix to it (the RNG, the train mode, a NaN guard)
reaches both.

Usage::

    model, history = finetune(model, data, steps=200, lr=3e-4, batch_size=16, seed=0)
    history["loss"][-1]
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from solvers.common import StepCallback
from solvers.data import SourceSampler, TokenizedSet
from solvers.device import bf16_autocast, check_autocast, rng_devices
from solvers.lm import IGNORE, token_mean_loss

GRAD_CLIP = 1.0
"""Max global gradient norm of the comparison recipe."""

Schedule = Literal["cosine", "constant"]
SamplerMode = Literal["stratified", "proportional"]


def lr_at(step: int, steps: int, peak_lr: float, warmup_steps: int) -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``peak_lr``, then cosine decay to 0 at ``steps``.

    The warmup starts at ``peak_lr / warmup_steps`` rather than 0 so the first step is never wasted.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def finetune(
    model: nn.Module,
    data: TokenizedSet,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    warmup_ratio: float = 0.03,
    weight_decay: float = 0.0,
    schedule: Schedule = "cosine",
    betas: tuple[float, float] = (0.9, 0.95),
    grad_clip: float | None = GRAD_CLIP,
    decay_all: bool = False,
    mode: SamplerMode = "proportional",
    stage: str = "sft",
    on_step: StepCallback | None = None,
    autocast_bf16: bool = False,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Fine-tune ``model`` in place on ``data``; the defaults are the fixed comparison recipe.

    Args:
        model: A causal LM taking ``input_ids``/``attention_mask`` and returning ``.logits``; trained where it
            sits (its device and dtype are kept, and so is its train/eval mode once done).
        data: Rows to train on, already in the proportions to compare (a resampled selection); loss is on
            response tokens only, as masked in ``data.labels``.
        steps: Optimizer steps (each one batch).
        lr: Peak learning rate after warmup (the learning rate throughout with ``schedule="constant"``).
        batch_size: Rows per step, drawn without replacement within an epoch.
        seed: Seeds the row order and any dropout, so two runs with the same seed give the same parameters.
        warmup_ratio: Fraction of ``steps`` spent warming up (rounded up to whole steps); cosine schedule only.
        weight_decay: AdamW decoupled decay, applied to matrices only unless ``decay_all``: norms and biases
            are not decayed by default because shrinking them changes the function rather than regularising it.
        schedule: ``"cosine"`` (warmup, then cosine decay to 0) or ``"constant"`` (``lr`` at every step, as the
            reference models of RHO and DoReMi are trained in the authors' code).
        betas: AdamW's (β1, β2); (0.9, 0.95) is the LM fine-tuning choice, torch's default is (0.9, 0.999).
        grad_clip: Max global gradient norm, or ``None`` not to clip (``grad_norm`` is still recorded).
        decay_all: Decay every trainable parameter with ``weight_decay``, as ``torch.optim.AdamW`` does by default.
        mode: Batch sampling of :class:`~solvers.data.SourceSampler`: ``"proportional"`` (uniform over rows) or
            ``"stratified"`` (equal rows per source, i.e. the uniform mixture).
        stage: The ``stage`` of each step record, so a caller running several loops can tell them apart.
        on_step: Called after each step with ``{"stage", "step", "loss", "lr", "grad_norm", "n_tokens"}``, e.g.
            for a progress bar.
        autocast_bf16: Run the forward pass (so also its backward) under CUDA bf16 autocast (faster on
            a GPU); the weights, gradients and optimizer state stay in the model's dtype (fp32), and the loss is
            taken on fp32 logits. CUDA only.

    Returns:
        The trained model (the same object) and the history ``{"loss", "lr", "grad_norm", "n_tokens"}``, one
        value per step; ``loss`` is the batch's response-token mean before the update.

    Raises:
        ValueError: On an empty ``data``, a non-positive ``steps``/``lr``/``batch_size``, a warmup ratio outside
            ``[0, 1)``, an unknown ``schedule`` or ``autocast_bf16`` on a model that is not on CUDA.
        FloatingPointError: When a batch loss is NaN or infinite (the step is not applied).
    """
    _check_args(data, steps, lr, batch_size, warmup_ratio, schedule)
    device = next(model.parameters()).device
    check_autocast(autocast_bf16, device, "finetune")
    warmup_steps = math.ceil(warmup_ratio * steps) if schedule == "cosine" else 0
    groups = _param_groups(model, weight_decay, decay_all)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)
    sampler = SourceSampler(data, batch_size, seed, mode=mode)
    history: dict[str, list[float]] = {"loss": [], "lr": [], "grad_norm": [], "n_tokens": []}
    was_training = model.training
    model.train()  # dropout on while training, whatever mode the model arrived in (from_pretrained: eval)
    try:
        with torch.random.fork_rng(devices=rng_devices(device)):
            torch.manual_seed(seed)
            for step in range(steps):
                step_lr = lr_at(step, steps, lr, warmup_steps) if schedule == "cosine" else lr
                metrics = _train_step(model, optimizer, _to(sampler.next(), device), step_lr, step, grad_clip,
                                      autocast_bf16)
                for key, value in metrics.items():
                    history[key].append(value)
                if on_step is not None:
                    on_step({"stage": stage, "step": step, **metrics})
    finally:
        model.train(was_training)
    return model, history


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                step_lr: float, step: int, grad_clip: float | None, autocast_bf16: bool = False) -> dict[str, float]:
    for group in optimizer.param_groups:
        group["lr"] = step_lr
    with bf16_autocast(autocast_bf16):
        loss = token_mean_loss(model, batch)  # token_losses upcasts the logits, so the loss itself is fp32
    if not torch.isfinite(loss):
        raise FloatingPointError(f"finetune: loss is {loss.item()} at step {step}; lower lr or check data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is None:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    else:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    n_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
    return {"loss": float(loss.detach()), "lr": step_lr, "grad_norm": float(grad_norm), "n_tokens": n_tokens}


def _param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_args(data: TokenizedSet, steps: int, lr: float, batch_size: int, warmup_ratio: float,
                schedule: str) -> None:
    if len(data) == 0:
        raise ValueError("finetune: data has no rows")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"finetune: steps and batch_size must be >= 1 (got {steps}, {batch_size})")
    if not lr > 0:
        raise ValueError(f"finetune: lr must be > 0 (got {lr})")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"finetune: warmup_ratio must be in [0, 1) (got {warmup_ratio})")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"finetune: schedule must be 'cosine' or 'constant' (got {schedule!r})")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}

