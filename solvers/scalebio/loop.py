"""The ScaleBiO training loop: ``fit`` a model's source weights on a training pool against a target set.

Usage::

    from solvers.scalebio import ScaleBiOConfig, fit, make_samplers
    cfg = ScaleBiOConfig(steps=300)
    train, val = make_samplers(train_set, val_set, cfg)     # solvers.data.TokenizedSet in, samplers out
    result = fit(model, train, val, cfg, checkpoint_dir="runs/x/checkpoints")
    result.weights            # {"source": weight}
 Each step draws one training batch and one target batch, takes one simultaneous update of u, w and λ
(:mod:`solvers.scalebio.step`), logs a trajectory row and maybe writes a checkpoint. A Ctrl-C is deferred to
the end of the running step, so the checkpoint written on interrupt is always a consistent state (a second
Ctrl-C aborts at once, keeping the last checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from solvers.data import SourceSampler, TokenizedSet
from solvers.lm import per_example_loss, token_mean_loss
from solvers.scalebio import checkpoint, schedule
from solvers.scalebio.config import ScaleBiOConfig
from solvers.scalebio.engine import LOCAL, Engine
from solvers.scalebio.lisa import Lisa
from solvers.scalebio.simplex import effective_sources, entropy, named, weights
from solvers.scalebio.step import LossFn, SolverState, scalebio_step

log = logging.getLogger(__name__)

COLLAPSE = 0.95  # a final weight above this means the run put (nearly) everything on one source
SETTLE_TOL = 0.05  # L1 change of p over the last 10% of steps above which the weights are "still moving"


class _Named(Protocol):
    sources: list[str]


class BatchSampler(Protocol):
    """What ``fit`` needs from a sampler; :class:`solvers.data.SourceSampler` is one.

    ``next()`` returns a batch for the loss functions; training batches must carry ``source_ids`` (int64,
    ``[B]``).
    """

    @property
    def data(self) -> _Named: ...  # read-only, so any object with ``sources`` satisfies it

    batch_size: int

    def next(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Diagnostics:
    """Summary checks of a finished run."""

    entropy: float
    """H(p) of the final weights, in nats."""
    effective_sources: float
    """exp(H): K for uniform weights, 1 for all weight on one source."""
    l1_final_vs_averaged: float
    """||p_final − p_averaged||₁; large when the weights were still moving in the averaging window."""
    warnings: list[str] = field(default_factory=list)
    """Human-readable problems: collapse onto one source, weights not settled."""


@dataclass
class ScaleBiOResult:
    """What a run learned."""

    weights: dict[str, float]
    """Final source weights softmax(λ) after the last update."""
    averaged_weights: dict[str, float]
    """Mean of the per-step weights p_t over steps t >= ``average_from · steps`` (the second half by default);
    less noisy than the final weights when λ's step size is large, and it keeps the order of near-collapsed
    sources."""
    trajectory: list[dict[str, float]]
    """One row per step, with p and the losses at the pre-update point: step, stage, alpha, lr_scale,
    p_<source>, loss_u_<source>, loss_w_<source> (NaN for a source absent from the step's batch), target_loss,
    gap, grad_norm_u, grad_norm_w, grad_norm_lambda, tokens, tokens_per_s."""
    diagnostics: Diagnostics
    model: nn.Module
    """The final w model (fits the target while staying near-optimal for the weighted training loss). With
    ``lower_level="lora"`` it is an :class:`solvers.scalebio.lora.AdapterView` (callable like the model; its
    ``shared`` attribute is the peft model with both adapters)."""


@dataclass
class _Run:
    state: SolverState
    lisa: Lisa | None
    train: BatchSampler
    val: BatchSampler
    sources: list[str]
    cfg: ScaleBiOConfig
    engine: Engine = LOCAL
    trajectory: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    in_step: bool = False


def make_samplers(train_set: TokenizedSet, val_set: TokenizedSet,
                  cfg: ScaleBiOConfig) -> tuple[SourceSampler, SourceSampler]:
    """The training sampler (``cfg.sampling``, ``cfg.batch_size``) and a uniform target sampler, seeded from
    cfg."""
    return (SourceSampler(train_set, cfg.batch_size, cfg.seed, cfg.sampling),
            SourceSampler(val_set, cfg.val_batch_size, cfg.seed + 1, "proportional"))


def fit(model: nn.Module, train: BatchSampler, val: BatchSampler, cfg: ScaleBiOConfig, *,
        on_step: Callable[[dict[str, float]], None] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
        per_example_loss_fn: LossFn = per_example_loss,
        target_loss_fn: LossFn = token_mean_loss, consume: bool = False,
        engine: Engine = LOCAL) -> ScaleBiOResult:
    """Learn source weights by ScaleBiO (ALGORITHMS.md §2): penalty-based first-order bilevel optimisation.

    ``model`` is not modified: u and w are independent deep copies of it. With ``consume=True`` u trains
    ``model`` itself (in place) and only w is a copy, so the run holds two models, not three: use it when the
    caller has no further use for the base model (``curate reweight`` saves it first).

    Args:
        model: any module the loss functions accept (an HF causal LM by default), on the device to train on.
        train: training-pool sampler; its ``data.sources`` names the sources, in ``source_ids`` order.
        val: target-set sampler for the upper-level loss.
        cfg: hyperparameters.
        on_step: called with each trajectory row after its step (progress bars, JSON logs).
        checkpoint_dir: where to write the resumable checkpoint (every ``cfg.checkpoint_every`` steps, on
            KeyboardInterrupt, and at the end).
        resume: continue from the checkpoint in ``checkpoint_dir``.
        per_example_loss_fn: ``(model, batch) -> [B]`` training losses; response-token-mean NLL by default.
        target_loss_fn: ``(model, batch) -> scalar`` target loss; token-mean NLL by default.
        consume: see above.
        engine: where it runs: one process (the default) or :class:`solvers.distributed.DeepSpeedEngine` on every
            rank of a torchrun job; the loop, the step and the checkpoints' contents are the same.

    Returns:
        Final and averaged weights, the trajectory, diagnostics and the final w model.

    Raises:
        ValueError: samplers disagree with ``cfg``, fewer than 2 sources, bf16 autocast off CUDA, or a resumed
            checkpoint was made with a different config.
        FileNotFoundError: ``resume=True`` and there is no checkpoint.
        NonFiniteLossError: a loss or gradient became NaN/inf (the checkpoint on disk is left as it was).
        KeyboardInterrupt: re-raised after writing a checkpoint of the last completed step.
    """
    device = next(model.parameters()).device
    sources = list(train.data.sources)
    check_inputs(train, val, cfg, sources, device)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    state = engine.init_state(model, len(sources), cfg, consume)
    run = _Run(state, engine.make_lisa(state, cfg), train, val, sources, cfg, engine)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        if resume:
            _restore(run, checkpoint_dir)  # type: ignore[arg-type]
            log.info("resumed ScaleBiO from %s at step %d", checkpoint_dir, run.step)
        with _deferred_sigint(announce=engine.writer) as interrupted:
            try:
                while run.step < cfg.steps:
                    row = _advance(run, device, per_example_loss_fn, target_loss_fn)
                    if on_step is not None:
                        on_step(row)
                    if checkpoint_dir is not None and _due(run.step, cfg.checkpoint_every):
                        _save(run, checkpoint_dir)
                    if _agree(engine, interrupted()):
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                _save_on_interrupt(run, checkpoint_dir)
                raise
        if checkpoint_dir is not None:
            _save(run, checkpoint_dir)
    return _result(run)


def _agree(engine: Engine, flag: bool) -> bool:
    """Whether any rank saw the flag (a Ctrl-C reaches the ranks at different moments; all must stop after the
    same step so their checkpoint is one state)."""
    if engine.world == 1:
        return flag
    return bool(engine.sum(torch.tensor(float(flag))) > 0)


def lora_spec(cfg: ScaleBiOConfig) -> Any:
    """The adapters' settings under ``lower_level="lora"``, else None."""
    if cfg.lower_level != "lora":
        return None
    from solvers.lora import LoraSpec

    return LoraSpec(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.lora_target,
                    seed=cfg.seed)


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _advance(run: _Run, device: torch.device, per_example_loss_fn: LossFn,
             target_loss_fn: LossFn) -> dict[str, float]:
    """Run step ``run.step``, append its row and count it; ``run.in_step`` marks a half-done step."""
    cfg, t, engine = run.cfg, run.step, run.engine
    run.in_step = True
    started = time.perf_counter()
    alpha, lr_scale = schedule.alpha(t, cfg), schedule.lr_scale(t, cfg)
    if t > 0 and schedule.stage(t, cfg) != schedule.stage(t - 1, cfg):
        engine.new_stage(run.state, alpha)
    if run.lisa is not None and run.lisa.due(t):
        engine.redraw(run.lisa, run.state, t)
    full_train, full_val = run.train.next(), run.val.next()
    train_batch, val_batch = _to(engine.shard(full_train), device), _to(engine.shard(full_val), device)
    metrics = scalebio_step(
        run.state, train_batch, val_batch, alpha=alpha, lr_model=cfg.lr_model, lr_lambda=cfg.lr_lambda,
        lr_scale=lr_scale, grad_clip=cfg.grad_clip, n_sources=len(run.sources), step=t,
        per_example_loss_fn=per_example_loss_fn, target_loss_fn=target_loss_fn, eval_mode=cfg.eval_mode,
        autocast_bf16=cfg.autocast_bf16, engine=engine,
    )
    present = torch.bincount(full_train["source_ids"].cpu(), minlength=len(run.sources)).tolist()
    row = _row(run.sources, metrics, present, time.perf_counter() - started)
    row = {"step": t, "stage": schedule.stage(t, cfg), "alpha": alpha, "lr_scale": lr_scale, **row}
    run.trajectory.append(row)
    run.step += 1
    run.in_step = False
    return row


def _row(sources: list[str], metrics: dict[str, Any], present: list[int], elapsed: float) -> dict[str, float]:
    """Flatten a step's metrics into named columns; a source absent from the batch has NaN losses."""
    row: dict[str, float] = {}
    for key in ("p", "loss_u", "loss_w"):
        for s, value, n in zip(sources, metrics[key], present, strict=True):
            row[f"{key}_{s}"] = value if n or key == "p" else math.nan
    for key in ("target_loss", "gap", "grad_norm_u", "grad_norm_w", "grad_norm_lambda", "tokens"):
        row[key] = float(metrics[key])
    row["tokens_per_s"] = metrics["tokens"] / max(elapsed, 1e-9)
    return row


def _payload(run: _Run) -> dict[str, Any]:
    """Everything of a checkpoint but the models and their optimizers (the engine writes those)."""
    s = run.state
    return {
        "version": 1, "config": run.cfg.to_dict(), "step": run.step, "sources": run.sources,
        "logits": s.logits.detach().clone(), "opt_lambda": s.opt_lambda.state_dict(),
        "rng": checkpoint.rng_state(), "lisa": run.lisa.state_dict() if run.lisa is not None else None,
        "train_sampler": run.train.state_dict(), "val_sampler": run.val.state_dict(),
        "trajectory": list(run.trajectory),
    }


def _save(run: _Run, directory: str | os.PathLike[str]) -> None:
    run.engine.save(directory, _payload(run), run.state)


def _restore(run: _Run, directory: str | os.PathLike[str]) -> None:
    def check(ck: dict[str, Any]) -> None:
        changed = checkpoint.config_mismatch(ck["config"], run.cfg.to_dict())
        if changed:
            raise ValueError(f"checkpoint was written with a different ScaleBiOConfig ({', '.join(changed)}); "
                             "resume with the same config or start a new run")
        if ck["sources"] != run.sources:
            raise ValueError(f"checkpoint sources {ck['sources']} differ from the sampler's {run.sources}")

    ck = run.engine.load(directory, run.state, run.lisa, check)
    s = run.state
    with torch.no_grad():
        s.logits.copy_(ck["logits"])
    s.opt_lambda.load_state_dict(ck["opt_lambda"])
    run.train.load_state_dict(ck["train_sampler"])
    run.val.load_state_dict(ck["val_sampler"])
    checkpoint.set_rng_state(ck["rng"])
    run.trajectory = list(ck["trajectory"])
    run.step = int(ck["step"])


def _save_on_interrupt(run: _Run, checkpoint_dir: str | os.PathLike[str] | None) -> None:
    if checkpoint_dir is None:
        return
    if run.in_step:
        if run.engine.writer:
            log.warning("interrupted inside step %d; kept the last periodic checkpoint in %s", run.step,
                        checkpoint_dir)
        return
    _save(run, checkpoint_dir)
    if run.engine.writer:
        log.warning("interrupted after step %d; checkpoint saved to %s", run.step, checkpoint_dir)


def _result(run: _Run) -> ScaleBiOResult:
    p = weights(run.state.logits.detach()).cpu()
    rows = run.trajectory
    start = int(run.cfg.average_from * run.cfg.steps)
    window = [r for r in rows if r["step"] >= start] or rows[-1:]
    averaged = torch.tensor([[r[f"p_{s}"] for s in run.sources] for r in window], dtype=torch.float64,
                            device="cpu").mean(0)  # a summary of the trajectory's floats, made on the host
    l1_avg = float((p.double() - averaged).abs().sum())
    warnings = []
    top = int(p.argmax())
    if float(p[top]) > COLLAPSE:
        warnings.append(f"weights collapsed onto source {run.sources[top]!r} (p={float(p[top]):.3f}); a "
                        "smaller lr_lambda or the averaged weights keep the ranking of the other sources")
    tail = rows[-max(1, len(rows) // 10)]
    moved = sum(abs(tail[f"p_{s}"] - float(v)) for s, v in zip(run.sources, p, strict=True))
    if moved > SETTLE_TOL:
        warnings.append(f"weights not settled: p moved {moved:.3f} (L1) over the last 10% of steps; run "
                        "more steps or use a decaying schedule")
    for message in warnings:
        log.warning(message)
    diagnostics = Diagnostics(entropy(p), effective_sources(p), l1_avg, warnings)
    return ScaleBiOResult(named(p, run.sources), named(averaged, run.sources), rows, diagnostics, run.state.w)


def check_inputs(train: BatchSampler, val: BatchSampler, cfg: ScaleBiOConfig, sources: list[str],
                 device: torch.device) -> None:
    """Refuse samplers that disagree with ``cfg``, fewer than 2 (or repeated) sources, and bf16 off CUDA.

    Raises:
        ValueError: naming the field and the fix.
    """
    if len(sources) < 2:
        raise ValueError(f"ScaleBiO weighs at least 2 sources, got {sources}")
    if len(set(sources)) != len(sources):
        raise ValueError(f"source names must be unique, got {sources}")
    for name, got, want in (("batch_size", getattr(train, "batch_size", None), cfg.batch_size),
                            ("val_batch_size", getattr(val, "batch_size", None), cfg.val_batch_size),
                            ("sampling", getattr(train, "mode", None), cfg.sampling)):
        if got is not None and got != want:
            raise ValueError(f"sampler has {name}={got!r} but ScaleBiOConfig.{name}={want!r}; build the "
                             "samplers with make_samplers(train_set, val_set, cfg)")
    if cfg.autocast_bf16 and device.type != "cuda":
        raise ValueError(f"ScaleBiOConfig.autocast_bf16 needs a CUDA model, got one on {device}")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to the models' device; to a GPU from pinned memory, so the copy overlaps compute."""
    if device.type != "cuda":
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


SIGINT_ECHO_S = 1.0
"""A second SIGINT this soon after the first is the same Ctrl-C: where a job's ranks share the terminal's process
group, its SIGINT reaches every rank and the launcher forwards it again a moment later (torch 2.13's torchrun starts
each rank in a session of its own, so there only the launcher's arrives)."""


@contextlib.contextmanager
def _deferred_sigint(announce: bool = True) -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag checked between steps; a second one (later than :data:`SIGINT_ECHO_S`)
    raises at once. ``announce``: say so when the first one comes (rank 0 of a job does, for every rank)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    hits: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if hits and now - hits[0] > SIGINT_ECHO_S:
            raise KeyboardInterrupt
        if not hits and announce:
            log.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort now)")
        hits.append(now)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def enable_checkpointing(*models: nn.Module) -> None:
    """Turn on non-reentrant gradient checkpointing in Hugging Face models, or in the base under LoRA adapters.

    Raises:
        ValueError: a model that is not a Hugging Face model.
    """
    for m in models:
        hf = hf_model(m)
        if hf is None:
            raise ValueError(f"gradient_checkpointing needs a Hugging Face model, got {type(m).__name__}")
        if hasattr(hf, "activation_checkpointing_enable"):  # the newer name; the old one warns
            hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def hf_model(model: nn.Module) -> Any:
    """The Hugging Face model doing the work: ``model`` itself, or the base under a peft model or adapter view."""
    m: Any = getattr(model, "shared", model)  # AdapterView -> the shared peft model
    m = m.get_base_model() if hasattr(m, "get_base_model") else m
    return m if hasattr(m, "gradient_checkpointing_enable") else None
