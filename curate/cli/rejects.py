"""`curate rejects`: the rows ingest read and did not keep (file, row, reason, the start of the raw line)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from curate.cli._common import DEFAULT_DB, Db, guarded, out
from curate.cli.ingest import compact_table, framed
from curate.db import open_db
from curate.ingest import list_rejects

RAW_CHARS = 60  # enough of a line to recognise it; the whole line (up to 2,000 characters) is in the store


def register(app: typer.Typer) -> None:
    app.command("rejects")(rejects)


@guarded
def rejects(
    source: Annotated[str | None, typer.Option(help="Only rejects of this source.")] = None,
    limit: Annotated[int, typer.Option(help="How many rejects to list.")] = 20,
    db: Db = DEFAULT_DB,
) -> None:
    """List rejected rows by file and row: why each was not kept, and how its line starts."""
    with open_db(db, read_only=True) as con:
        rows, total, by_reason = list_rejects(con, source, limit)
    scope = f" of source {source}" if source else ""
    if not rows:
        out.print(f"{db}: no rejects{scope}; every row read was kept or was a duplicate", highlight=False,
                  markup=False)
        return
    shown = f"{len(rows):,} of {total:,}" + ("; --limit N for more" if total > len(rows) else "")
    reasons = ", ".join(f"{r} x{n:,}" for r, n in by_reason.items())
    t = compact_table()
    t.add_column("file", overflow="fold", ratio=2, min_width=8)
    t.add_column("row", justify="right", no_wrap=True)
    t.add_column("reason", overflow="fold", ratio=2, min_width=10)
    t.add_column("raw line starts", overflow="fold", ratio=3, min_width=12)
    for r in rows:
        t.add_row(Text(r.origin), f"{r.origin_row:,}", Text(r.reason), Text(_start(r.raw)))
    out.print(framed(f"rejects{scope} in {db} ({shown})", t, f"by reason: {reasons}"))


def _start(raw: str) -> str:
    """The first characters of a raw line, control characters made visible, so one reject is one short cell."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw[:RAW_CHARS])
    return text + ("…" if len(raw) > RAW_CHARS else "")
