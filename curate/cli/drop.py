"""`curate drop --source S | --file F`: remove what a source or one ingested file brought, in one transaction."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from curate.cli._common import DEFAULT_DB, Db, Quiet, guarded, out
from curate.cli.ingest import compact_table, framed
from curate.db import open_db
from curate.errors import DataError
from curate.ingest import drop as drop_rows


def register(app: typer.Typer) -> None:
    app.command("drop")(drop)


@guarded
def drop(
    source: Annotated[str | None, typer.Option(help="Remove this source (every split).")] = None,
    file: Annotated[str | None, typer.Option(help="Remove what this file brought: its path as ingested, or its "
                                                  "sha256 (8 hex digits or more).")] = None,
    db: Db = DEFAULT_DB,
    quiet: Quiet = False,
) -> None:
    """Remove the rows, rejects and ledger entries a source or file brought; runs already recorded stay.

    Ingesting the file again afterwards stores it afresh.
    """
    if not db.exists():  # dropping from a store that is not there must not create an empty one
        raise DataError(f"{db}: no such database; pass the --db you ingested into")
    with open_db(db) as con:
        report = drop_rows(con, source=source, file=file)
    if quiet:
        return
    t = compact_table()
    t.add_column("file", overflow="fold", ratio=3, min_width=8)
    t.add_column("source", overflow="fold", ratio=2, min_width=8)
    t.add_column("split", no_wrap=True)
    t.add_column("rows", justify="right", no_wrap=True)
    t.add_column("rejects", justify="right", no_wrap=True)
    for d in report.removed:
        t.add_row(Text(d.origin), Text(d.source), Text(d.split), f"{d.rows:,}", f"{d.rejects:,}")
    out.print(framed(f"dropped {report.what} from {db}", t))
    files = len({d.origin for d in report.removed})
    out.print(f"removed {_n(report.rows, 'row')} and {_n(report.rejects, 'reject')} from {_n(files, 'file')}",
              highlight=False, markup=False)
    for note in report.notes:
        out.print(Text("note: " + note, style="yellow"))


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
