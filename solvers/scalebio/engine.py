"""What a ScaleBiO step needs from where it runs: one process (:class:`Engine`, the default) or DeepSpeed ranks
(:class:`solvers.distributed.DeepSpeedEngine`).

The step (:mod:`solvers.scalebio.step`) and the loop (:mod:`solvers.scalebio.loop`) are written once, against this
interface; an engine only says how batch statistics combine across ranks (:meth:`Engine.sum`), which slice of a
global batch this process trains on (:meth:`Engine.shard`), how a loss is backpropagated and the models are
clipped and stepped, how u, w and their optimizers are built (and rebuilt when LISA or an α stage changes what
trains), and how a checkpoint is written and read. With one process every reduction is the identity and
``world`` is 1, so the formulas of the step reduce exactly (bit for bit) to the single-process estimators.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from solvers.scalebio import checkpoint

if TYPE_CHECKING:
    from solvers.scalebio.config import ScaleBiOConfig
    from solvers.scalebio.lisa import Lisa
    from solvers.scalebio.step import SolverState

Batch = dict[str, torch.Tensor]


class Engine:
    """One process: reductions are the identity, backward is ``loss.backward()``, torch AdamW steps."""

    world: int = 1
    rank: int = 0

    @property
    def writer(self) -> bool:
        """Whether this process writes files (checkpoints, results)."""
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of a per-rank statistic (a new tensor or ``t`` itself; never modifies ``t``)."""
        return t

    def sum_grad_(self, t: torch.Tensor) -> None:
        """In place: Σ over ranks of a gradient every rank holds a share of (λ's)."""

    def shard(self, batch: Batch) -> Batch:
        """This process's rows of a global batch (every rank draws the same global batch)."""
        return batch

    def zero_grad(self, model: nn.Module) -> None:
        """Forget ``model``'s gradients before the step's first backward."""
        model.zero_grad(set_to_none=True)

    def backward(self, model: nn.Module, loss: torch.Tensor, final: bool = True) -> None:
        """Backpropagate one of ``model``'s losses; ``final`` marks its last loss of the step (an engine may
        hold the others and backpropagate their sum then)."""
        loss.backward()

    def update(self, items: Sequence[tuple[nn.Module, torch.optim.Optimizer, float | None]], lr: float,
               step: int) -> list[float]:
        """Clip each ``(model, optimizer, max_norm)`` and step it at ``lr``; returns the pre-clip norms.

        Every norm is checked before any model is stepped, so a non-finite gradient leaves all of them as they
        were.

        Raises:
            NonFiniteLossError: a gradient norm is NaN/inf.
        """
        from solvers.scalebio.step import clip, set_lr

        norms = [clip(model.parameters(), max_norm, step) for model, _, max_norm in items]
        for _, opt, _ in items:
            set_lr(opt, lr)
            opt.step()
        return norms

    def init_state(self, model: nn.Module, n_sources: int, cfg: ScaleBiOConfig, consume: bool) -> SolverState:
        """u, w, λ and their optimizers (see :func:`solvers.scalebio.step.init_state`)."""
        from solvers.scalebio.loop import enable_checkpointing, lora_spec
        from solvers.scalebio.step import init_state

        state = init_state(model, n_sources, cfg.lr_model, cfg.lr_lambda, cfg.weight_decay,
                           cfg.lambda_weight_decay, lora=lora_spec(cfg), consume=consume)
        if cfg.gradient_checkpointing:
            enable_checkpointing(state.u, state.w)
        return state

    def make_lisa(self, state: SolverState, cfg: ScaleBiOConfig) -> Lisa | None:
        """The block sampler of u and w, or None without LISA."""
        if not cfg.lisa:
            return None
        from solvers.scalebio.lisa import Lisa

        return Lisa([state.u, state.w], cfg.lisa_layers, cfg.lisa_period, cfg.seed, cfg.lisa_release_state)

    def new_stage(self, state: SolverState, alpha: float) -> None:
        """α grew (ALGORITHMS.md §5.3): forget the AdamW moments, whose second moment would otherwise remember
        the old gradient scale for ~1/(1 − β2) steps and let λ run ahead of u and w."""
        for opt in (state.opt_u, state.opt_w, state.opt_lambda):
            opt.state.clear()

    def redraw(self, lisa: Lisa, state: SolverState, step: int) -> None:
        """LISA's draw at ``step`` (a multiple of its period), releasing the frozen blocks' AdamW moments."""
        lisa.maybe_redraw(step, [state.opt_u, state.opt_w])

    def save(self, directory: str | os.PathLike[str], payload: dict[str, Any], state: SolverState) -> None:
        """Write the checkpoint: ``payload`` (everything but the models and their optimizers) plus those."""
        checkpoint.save(directory, {**payload, "u": state.u.state_dict(), "w": state.w.state_dict(),
                                    "opt_u": state.opt_u.state_dict(), "opt_w": state.opt_w.state_dict()})

    def load(self, directory: str | os.PathLike[str], state: SolverState, lisa: Lisa | None,
             check: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read a checkpoint written by :meth:`save` into u, w, their optimizers and ``lisa`` (whose freezing
        decides what the optimizers hold), after ``check`` accepted its payload; returns the payload.

        Raises:
            FileNotFoundError: ``directory`` holds no checkpoint.
        """
        ck = checkpoint.load(directory)
        check(ck)
        state.u.load_state_dict(ck["u"])
        state.w.load_state_dict(ck["w"])
        if lisa is not None:
            lisa.load_state_dict(ck["lisa"])
        state.opt_u.load_state_dict(ck["opt_u"])
        state.opt_w.load_state_dict(ck["opt_w"])
        return ck


LOCAL = Engine()
"""The single-process engine."""
