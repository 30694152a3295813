"""The registry's adapter for every method of the ``baselines`` package (uniform ... DoReMi).

The baselines take plain data and return :class:`baselines.MethodResult`; this turns their inputs and result into
curate's typed ones, and their ``ValueError`` into a one-line :class:`~curate.errors.ConfigError`. On the ranks of a
``--launcher deepspeed`` job for a method that shards its pool (LESS) it joins their gloo group first and leaves it
after; every rank gets the same result, rank 0 writes.
"""

from __future__ import annotations

import shutil
from typing import Any

from curate import methods
from curate.errors import ConfigError, Interrupted
from curate.launch import current_rank, join_ranks, leave_ranks, rank_device
from curate.methods.base import FitInputs, FitResult, TrajectoryRow


def fit(inputs: FitInputs) -> FitResult:
    """Run the baseline ``inputs.method`` on the pool (and, for model-based ones, the model and tokenized sets),
    on ``inputs.device`` as ScaleBiO runs: the base is saved in the run folder already, so the loaded model moves
    there in place rather than as a second copy."""
    from baselines import run

    entry = methods.get(inputs.method)
    rank = join_ranks() if entry.shards_pool else current_rank()
    try:
        return _fit(inputs, run, rank_device(inputs.device, rank), rank.writer)
    finally:
        if entry.shards_pool and rank.world > 1:
            leave_ranks()


def _fit(inputs: FitInputs, run: Any, device: str, writer: bool) -> FitResult:
    counts, train = inputs.counts, inputs.train
    if train is not None and hasattr(train, "usable") and _scores_every_row(inputs.method):
        train = train.usable()  # a streamed pool: one pass drops its label-less rows, as the in-memory path does
    if train is not None:  # label-less rows were dropped: weigh what is left
        counts = {s: int(n) for s, n in zip(train.sources, train.counts(), strict=True)}
    model = inputs.model.to(device) if inputs.model is not None else None
    resumable = methods.get(inputs.method).resumable
    try:
        res = run(inputs.method, inputs.cfg, counts=counts, model=model, train=train,
                  target=inputs.target_set, on_step=inputs.on_step,
                  device=device if model is not None else None,
                  checkpoint_dir=inputs.run.checkpoints if resumable else None)
    except (ValueError, FloatingPointError) as e:  # a bad setting, or a reference model's loss going NaN
        raise ConfigError(f"{inputs.method}: {e}") from None
    except KeyboardInterrupt:
        if not resumable:
            raise
        raise Interrupted(f"scored chunks are kept in {inputs.run.checkpoints}; continue with `curate reweight "
                          f"--resume {inputs.run.root}`") from None
    if resumable and writer:  # the stored passes served their purpose; a reference model can be as large as the model
        shutil.rmtree(inputs.run.checkpoints, ignore_errors=True)
    trajectory = [TrajectoryRow.from_record(r) for r in res.trajectory or []]
    return FitResult(weights=dict(res.weights), scores=res.scores, selected=res.selected, trajectory=trajectory,
                     diagnostics=dict(res.info))


def _scores_every_row(method: str) -> bool:
    """LESS and RHO score every pool row (DoReMi only samples batches)."""
    return methods.get(method).level == "example"
