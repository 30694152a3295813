"""`curate runs` and `curate runs show RUN`: the runs recorded in the store, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from curate.cli._common import DEFAULT_DB, Db, guarded, out

runs_app = typer.Typer(help="Past runs: method, target, status and weights (from the store's run record).",
                       no_args_is_help=False, invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
@guarded
def runs(
    ctx: typer.Context,
    method: Annotated[str | None, typer.Option(help="Only runs of this method.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs to list.")] = 20,
    db: Db = DEFAULT_DB,
) -> None:
    """List past runs, newest first: id, method, target, status, start time and the heaviest sources."""
    if ctx.invoked_subcommand is not None:
        return
    from curate.history import list_runs

    records = list_runs(db, method, limit)
    if not records:
        out.print(f"{db}: no runs recorded yet; run `curate reweight`")
        return
    t = Table(title=f"runs in {db}")
    for col in ("run", "method", "target", "status", "started"):
        t.add_column(col, no_wrap=True)
    t.add_column("top weights", overflow="fold", min_width=12)
    for r in records:
        top = "\n".join(f"{s} {w:.2f}" for s, w in list(r.weights.items())[:3])
        t.add_row(r.run_id, r.method, r.target or "", r.status, (r.created_at or "")[5:16], top)
    out.print(t)


@runs_app.command("show")
@guarded
def show(
    run: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or its run folder.")],
    db: Db = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """One run: its settings, every source's final weight and what it stored."""
    import dataclasses

    from curate.history import show_run

    r = show_run(db, run)
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(r), default=str))
        return
    out.print(f"[bold]{r.run_id}[/]  {r.method}  {r.status}  target {r.target}", highlight=False)
    out.print(f"started {(r.created_at or '')[:19]}, finished {(r.finished_at or '-')[:19]}; folder {r.run_dir}",
              highlight=False)
    out.print(f"{r.trajectory_steps} recorded steps, {r.scored_rows:,} scored rows", highlight=False)
    t = Table(title="final weights")
    t.add_column("source", overflow="fold")
    t.add_column("weight", justify="right")
    for s, w in r.weights.items():
        t.add_row(s, f"{w:.4f}")
    out.print(t)
    keys = r.config.get("method_config") or {}
    if keys:
        out.print("method config: " + ", ".join(f"{k}={v}" for k, v in keys.items()), highlight=False)
