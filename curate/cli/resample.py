"""`curate resample RUN_OR_WEIGHTS --budget N`: one deterministic resampler for every method."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from curate.cli._common import Quiet, RunDb, Seed, err, guarded, out
from curate.db import open_db
from curate.resample import ResampleResult
from curate.resample import resample as run_resample
from curate.runs import store_for
from curate.sampling import DEFAULT_MAX_EPOCHS, MAX_PASSES, MAX_ROWS, check_budget, parse_max_epochs

log = logging.getLogger(__name__)

ResampleOut = Annotated[Path | None, typer.Option(
    "--out", help="Draw into this folder instead of RUN: new, empty, or an earlier `curate resample --out` folder.")]
MaxEpochs = Annotated[str, typer.Option(
    "--max-epochs", metavar="E|none", help=(
        f"Cap each source at E passes over its rows (default {DEFAULT_MAX_EPOCHS:g}: repeated data is nearly as good "
        "as fresh up to about 4 epochs, Muennighoff et al. 2023) and give the surplus to the sources with rows "
        f"left; every source the cap cuts is named in a warning. 'none': no cap per source (the budget is then "
        f"held to {MAX_PASSES} passes over the weighted sources together)."))]


def register(app: typer.Typer) -> None:
    app.command("resample")(resample)


@guarded
def resample(
    run: Annotated[Path, typer.Argument(help="A run folder from `curate reweight`, or a weights.json file.")],
    budget: Annotated[int, typer.Option(help=(
        f"Number of rows to draw: at least 1, at most {MAX_ROWS:,}, and at most --max-epochs passes over the rows "
        f"of the weighted sources (with --max-epochs none, at most {MAX_PASSES} passes)."))],
    seed: Seed = 0,
    max_epochs: MaxEpochs = f"{DEFAULT_MAX_EPOCHS:g}",
    db: RunDb = None,
    out_dir: ResampleOut = None,
    quiet: Quiet = False,
) -> None:
    """Draw BUDGET rows in the learned proportions into RUN/data/ (Parquet parts with provenance columns), at most
    --max-epochs passes over any one source (default 4).

    --out DIR: the rows go to DIR/data, RUN's weights.json and scores.parquet are copied there, RUN is untouched.
    """
    check_budget(budget)  # before the store is opened: a bad budget or cap is the one thing to fix
    epochs = parse_max_epochs(max_epochs)
    with open_db(store_for(run, db), read_only=True) as con:
        res = run_resample(con, run, budget=budget, seed=seed, max_epochs=epochs, out_dir=out_dir)
    if not quiet:
        out.print(allocation_table(res))
    print_warnings(res.warnings)
    out.print(f"wrote {res.run_dir / 'data'}")


def print_warnings(lines: list[str]) -> None:
    """The cap's warnings, on stderr and even with --quiet: the mixture drawn is not the one the weights ask for."""
    for line in lines:
        err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)


def allocation_table(res: ResampleResult) -> Table:
    """Rows per source (per group for a ``--group-by`` run) and their passes; with a capped one, what the weights
    alone would have given."""
    cap = "no cap" if res.max_epochs is None else f"max {res.max_epochs:g} epochs"
    unit = "source" if res.grouping is None else "group"
    t = Table(title=f"allocation ({cap})" if res.grouping is None else f"allocation over {res.grouping} ({cap})")
    cols = (unit, "available", "rows", "epochs") + (("uncapped",) if res.capped else ())
    for col in cols:
        t.add_column(col, justify="left" if col == unit else "right")
    for s, k in res.allocation.items():
        row = [s, f"{res.available[s]:,}", f"{k:,}", f"{res.repeats[s]:.2f}"]
        if res.capped:
            row.append(f"{res.capped[s].wanted:,} (-{res.capped[s].cut:,})" if s in res.capped else "")
        t.add_row(*row)
    return t
