"""`curate resample RUN_OR_WEIGHTS --budget N`: one deterministic resampler for every method."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli._common import Quiet, RunDb, Seed, guarded, out
from curate.db import open_db
from curate.resample import ResampleResult
from curate.resample import resample as run_resample
from curate.runs import store_for
from curate.sampling import MAX_PASSES, MAX_ROWS, check_budget

log = logging.getLogger(__name__)

ResampleOut = Annotated[Path | None, typer.Option(
    "--out", help="Draw into this folder instead of RUN: new, empty, or an earlier `curate resample --out` folder.")]


def register(app: typer.Typer) -> None:
    app.command("resample")(resample)


@guarded
def resample(
    run: Annotated[Path, typer.Argument(help="A run folder from `curate reweight`, or a weights.json file.")],
    budget: Annotated[int, typer.Option(help=(
        f"Number of rows to draw: at least 1, at most {MAX_ROWS:,}, and at most {MAX_PASSES} times the rows of "
        "the weighted sources unless --max-epochs says how many passes to allow."))],
    seed: Seed = 0,
    max_epochs: Annotated[float | None, typer.Option(help="Cap repeats of a source at this many passes and "
                                                          "redistribute the rest (UniMax).")] = None,
    db: RunDb = None,
    out_dir: ResampleOut = None,
    quiet: Quiet = False,
) -> None:
    """Draw BUDGET rows in the learned proportions into RUN/data/ (Parquet with provenance columns).

    --out DIR: the rows go to DIR/data, RUN's weights.json and scores.parquet are copied there, RUN is untouched.
    """
    check_budget(budget)  # before the store is opened: a bad budget is the one thing to fix
    with open_db(store_for(run, db), read_only=True) as con:
        res = run_resample(con, run, budget=budget, seed=seed, max_epochs=max_epochs, out_dir=out_dir)
    if not quiet:
        out.print(allocation_table(res))
    out.print(f"wrote {res.run_dir / 'data'}")


def allocation_table(res: ResampleResult) -> Table:
    t = Table(title="allocation")
    for col in ("source", "available", "rows", "epochs"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for s, k in res.allocation.items():
        t.add_row(s, f"{res.available[s]:,}", f"{k:,}", f"{res.repeats[s]:.2f}")
    return t
