"""`curate ingest PATH...`: files and folders into the DuckDB store, with a per-file accounting table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from curate.cli._common import DEFAULT_DB, NewDb, Quiet, err, guarded, out
from curate.db import open_db, removed_if_left_empty
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
    max_chars: Annotated[int | None, typer.Option(
        help=f"Reject rows longer than this (prompt + response; default {DEFAULT_MAX_CHARS:,}).",
        show_default=False)] = None,
    db: NewDb = DEFAULT_DB,
    quiet: Quiet = False,
) -> None:
    """Read data into the store: normalised rows, rejects with reasons, exact duplicates skipped.

    Ingesting a file again changes nothing; with another --schema or --max-chars it replaces what the file
    stored before. A file in which no row can be kept stores nothing and exits 2 with the fix.
    """
    with removed_if_left_empty(db), open_db(db) as con:
        reports = ingest_paths(con, list(paths), source=source, split=split, schema=schema, max_chars=max_chars)
    if not quiet:
        out.print(report_table(reports, db))
        for r in reports:
            if r.reasons:
                out.print(Text(f"{r.origin} rejects: " + ", ".join(f"{k} x{v:,}" for k, v in r.reasons.items())
                               + f" (curate rejects --source {r.sources[0] if len(r.sources) == 1 else 'NAME'})",
                               style="dim"))
            for other in r.also_as:
                out.print(Text(f"note: {r.origin} is also stored as source {other!r}; "
                               f"`curate drop --source {other}` removes that copy", style="yellow"))
    elif any(r.rejected for r in reports):
        err.print(f"{sum(r.rejected for r in reports):,} rows rejected; `curate rejects --db {db}` lists them",
                  highlight=False, markup=False)


def compact_table() -> Table:
    """A table that stays readable at 80 columns: no vertical rules, one space between columns."""
    return Table(box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)


def framed(title: str, table: Table, caption: str | None = None) -> Group:
    """The table under its title and over its caption, as lines of their own: a table narrower than its title
    would otherwise wrap the title to the table's width."""
    parts: list[RenderableType] = [Text(title, no_wrap=False, overflow="fold"), table]
    if caption:
        parts.append(Text(caption, no_wrap=False, overflow="fold"))
    return Group(*parts)


def report_table(reports: list[FileReport], db: Path) -> Group:
    """rows read = kept + duplicates + rejected, per file; readable at 80 columns (names fold, numbers never)."""
    t = compact_table()
    t.add_column("file", overflow="fold", ratio=3, min_width=8)
    t.add_column("schema", overflow="fold", ratio=2, min_width=6)
    t.add_column("sources", overflow="fold", ratio=3, min_width=7)
    for col in ("read", "kept", "duplicates", "rejected"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("status", no_wrap=True)
    for r in reports:
        name = Path(r.origin).name
        shown = r.schema if Path(name).suffix.lower().lstrip(".") == r.fmt else f"{r.schema} ({r.fmt})"
        t.add_row(Text(name), Text(shown), Text(", ".join(r.sources)), f"{r.rows_read:,}", f"{r.kept:,}",
                  f"{r.duplicates:,}", f"{r.rejected:,}", Text(r.status))
    notes = {r.status: STATUS_NOTES[r.status] for r in reports if r.status in STATUS_NOTES}
    return framed(f"ingest into {db}", t, "; ".join(f"{k}: {v}" for k, v in notes.items()) or None)


STATUS_NOTES = {
    "unchanged": "already ingested with these options, nothing stored again",
    "replaced": "ingested before with other options (or partly dropped since); what it stored was replaced",
}
