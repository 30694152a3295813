"""The registry's adapter for every method of the ``baselines`` package (uniform ... DoReMi).

The baselines take plain data and return :class:`baselines.MethodResult`; this turns their inputs and result into
curate's typed ones, and their ``ValueError`` into a one-line :class:`~curate.errors.ConfigError`.
"""

from __future__ import annotations

import shutil

from curate import methods
from curate.errors import ConfigError, Interrupted
from curate.methods.base import FitInputs, FitResult, TrajectoryRow


def fit(inputs: FitInputs) -> FitResult:
    """Run the baseline ``inputs.method`` on the pool (and, for model-based ones, the model and tokenized sets),
    on ``inputs.device`` as ScaleBiO runs: the base is saved in the run folder already, so the loaded model moves
    there in place rather than as a second copy."""
    from baselines import run

    counts, train = inputs.counts, inputs.train
    if train is not None and hasattr(train, "usable") and _scores_every_row(inputs.method):
        train = train.usable()  # a streamed pool: one pass drops its label-less rows, as the in-memory path does
    if train is not None:  # label-less rows were dropped: weigh what is left
        counts = {s: int(n) for s, n in zip(train.sources, train.counts(), strict=True)}
    model = inputs.model.to(inputs.device) if inputs.model is not None else None
    resumable = methods.get(inputs.method).resumable
    try:
        res = run(inputs.method, inputs.cfg, counts=counts, model=model, train=train,
                  target=inputs.target_set, on_step=inputs.on_step,
                  device=inputs.device if model is not None else None,
                  checkpoint_dir=inputs.run.checkpoints if resumable else None)
    except (ValueError, FloatingPointError) as e:  # a bad setting, or a reference model's loss going NaN
        raise ConfigError(f"{inputs.method}: {e}") from None
    except KeyboardInterrupt:
        if not resumable:
            raise
        raise Interrupted(f"scored chunks are kept in {inputs.run.checkpoints}; continue with `curate reweight "
                          f"--resume {inputs.run.root}`") from None
    if resumable:  # the stored passes served their purpose; a reference model can be as large as the model
        shutil.rmtree(inputs.run.checkpoints, ignore_errors=True)
    trajectory = [TrajectoryRow.from_record(r) for r in res.trajectory or []]
    return FitResult(weights=dict(res.weights), scores=res.scores, selected=res.selected, trajectory=trajectory,
                     diagnostics=dict(res.info))


def _scores_every_row(method: str) -> bool:
    """LESS and RHO score every pool row (DoReMi only samples batches)."""
    return methods.get(method).level == "example"
