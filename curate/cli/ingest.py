"""`curate ingest PATH...`: files and folders into the DuckDB store, with a per-file accounting table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli._common import DEFAULT_DB, Db, Quiet, err, guarded, out
from curate.db import open_db
from curate.ingest import FileReport, ingest_paths
from curate.ingest.load import DEFAULT_MAX_CHARS


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


@guarded
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="JSONL/JSON/Parquet/CSV files, save_to_disk folders, or "
                                                     "folders of them (one source per file).")],
    source: Annotated[str | None, typer.Option(help="Source name for every row (default: the file name).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "train",
    schema: Annotated[str, typer.Option(help="auto, alpaca, sharegpt, messages, prompt_response or text.")] = "auto",
    max_chars: Annotated[int, typer.Option(help="Reject rows longer than this (prompt + response).")] = (
        DEFAULT_MAX_CHARS),
    db: Db = DEFAULT_DB,
    quiet: Quiet = False,
) -> None:
    """Read data into the store: normalised rows, rejects with reasons, exact duplicates skipped."""
    with open_db(db) as con:
        reports = ingest_paths(con, list(paths), source=source, split=split, schema=schema, max_chars=max_chars)
    if not quiet:
        out.print(report_table(reports, db))
        for r in reports:
            if r.reasons:
                out.print(f"[dim]{r.origin} rejects: " + ", ".join(f"{k} x{v}" for k, v in r.reasons.items()) + "[/]")
    elif any(r.rejected for r in reports):
        err.print(f"{sum(r.rejected for r in reports)} rows rejected; see the rejects table in {db}")


def report_table(reports: list[FileReport], db: Path) -> Table:
    """rows read = kept + duplicates + rejected, per file."""
    t = Table(title=f"ingest into {db}")
    for col in ("file", "format", "schema", "sources", "read", "kept", "duplicates", "rejected", ""):
        t.add_column(col, justify="right" if col in ("read", "kept", "duplicates", "rejected") else "left")
    for r in reports:
        t.add_row(Path(r.origin).name, r.fmt, r.schema, ",".join(r.sources), str(r.rows_read), str(r.kept),
                  str(r.duplicates), str(r.rejected), "already ingested, unchanged" if r.cached else "")
    return t
