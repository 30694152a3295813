"""`curate resample RUN_OR_WEIGHTS --budget N`: one deterministic resampler for every method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli._common import DEFAULT_DB, Db, Out, Quiet, Seed, guarded, out
from curate.db import open_db
from curate.resample import ResampleResult
from curate.resample import resample as run_resample


def register(app: typer.Typer) -> None:
    app.command("resample")(resample)


@guarded
def resample(
    run: Annotated[Path, typer.Argument(help="A run folder from `curate reweight`, or a weights.json file.")],
    budget: Annotated[int, typer.Option(help="Number of rows to draw.")],
    seed: Seed = 0,
    max_epochs: Annotated[float | None, typer.Option(help="Cap repeats of a source at this many passes and "
                                                          "redistribute the rest (UniMax).")] = None,
    db: Db = DEFAULT_DB,
    out_dir: Out = None,
    quiet: Quiet = False,
) -> None:
    """Draw BUDGET rows in the learned proportions into RUN/data/ (Parquet with provenance columns)."""
    with open_db(db, read_only=True) as con:
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
