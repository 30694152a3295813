"""The registry's adapter for ScaleBiO: one process (``solvers.scalebio.fit``) or DeepSpeed ranks
(``solvers.distributed.fit_distributed``), with its failures turned into one-line errors that say how to go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from curate.errors import ConfigError, Interrupted
from curate.methods.base import FitInputs, FitResult, TrajectoryRow


def fit(inputs: FitInputs) -> FitResult:
    """Learn source weights with ScaleBiO; checkpoints go to the run's ``checkpoints/`` (single process)."""
    from solvers.scalebio import make_samplers

    train, val = make_samplers(inputs.train, inputs.target_set, inputs.cfg)
    res = _distributed(inputs, train, val) if inputs.zero_stage is not None else _single(inputs, train, val)
    return FitResult(weights=res.weights, averaged=res.averaged_weights,
                     trajectory=[TrajectoryRow.from_record(r) for r in res.trajectory],
                     diagnostics=dataclasses.asdict(res.diagnostics), model=res.model)


def _single(inputs: FitInputs, train: Any, val: Any) -> Any:
    from solvers.scalebio import fit as fit_scalebio

    model = inputs.model.to(inputs.device)
    with _one_line_errors(inputs, ""):
        # The base is saved in the run folder already, so u may train it in place: one model copy fewer.
        return fit_scalebio(model, train, val, inputs.cfg, on_step=inputs.on_step,
                            checkpoint_dir=inputs.run.checkpoints, resume=inputs.resume, consume=True)


def _distributed(inputs: FitInputs, train: Any, val: Any) -> Any:
    from solvers.distributed import fit_distributed, shutdown

    try:
        with _one_line_errors(inputs, " --launcher deepspeed"):
            return fit_distributed(inputs.model, train, val, inputs.cfg, zero_stage=inputs.zero_stage,
                                   ds_config=inputs.ds_config, on_step=inputs.on_step,
                                   checkpoint_dir=inputs.run.checkpoints, resume=inputs.resume,
                                   consume=True)  # the base is saved in the run folder
    finally:
        shutdown()


@contextlib.contextmanager
def _one_line_errors(inputs: FitInputs, launcher: str) -> Iterator[None]:
    """A NaN, a Ctrl-C or a bad setting as the one-line error that names the checkpoint and how to go on
    (``launcher``: the flags a resume needs)."""
    from solvers.scalebio import NonFiniteLossError

    checkpoints = inputs.run.checkpoints
    try:
        yield
    except NonFiniteLossError as e:
        raise ConfigError(f"{e}; the last good checkpoint is in {checkpoints} "
                          "(lower lr_model or lr_lambda and use --resume)") from None
    except KeyboardInterrupt:
        raise Interrupted(f"checkpoint in {checkpoints}; continue with `curate reweight --resume "
                          f"{inputs.run.root}{launcher}`") from None
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"scalebio: {e}") from None
