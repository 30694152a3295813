"""`curate export RUN`: a folder that `datasets.load_dataset(folder)` reads, with a dataset card; optional push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curate.cli._common import Quiet, guarded, out


def register(app: typer.Typer) -> None:
    app.command("export")(export)


@guarded
def export(
    run: Annotated[Path, typer.Argument(help="A run folder with resampled data (`curate resample`).")],
    fmt: Annotated[str, typer.Option("--format", help="parquet, jsonl or hf (save_to_disk).")] = "parquet",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Export folder (default: RUN/export).")] = None,
    messages: Annotated[bool, typer.Option(help="Emit chat rows as a `messages` list (TRL/axolotl).")] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out folder that curate did not write.")] = False,
    push_to_hub: Annotated[str | None, typer.Option(help="Also upload to this Hub dataset repo (NS/NAME).")] = None,
    private: Annotated[bool, typer.Option(help="Create the Hub repo as private.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write the resampled data as a Hugging Face-readable dataset with a card (weights, budget, provenance)."""
    from curate.export import check_repo_id, export_run
    from curate.export import push_to_hub as push

    if push_to_hub is not None:
        check_repo_id(push_to_hub)  # fail on a bad id before doing any work
    dest = export_run(run, out_dir if out_dir is not None else run / "export", fmt, messages,  # type: ignore[arg-type]
                      force=force)
    if not quiet:
        summary = json.loads((dest / "curate_export.json").read_text())
        per = ", ".join(f"{s}={n}" for s, n in summary.get("rows_per_source", {}).items())
        out.print(f"{summary.get('num_rows')} rows ({per}) as {fmt}")
    out.print(f"wrote {dest}")
    if push_to_hub is not None:
        url = push(dest, push_to_hub, private=private)
        out.print(f"pushed to {url}")
