"""`curate sources`: sources x splits with counts, characters, duplicates and rejects."""

from __future__ import annotations

import typer
from rich.table import Table

from curate.cli._common import DEFAULT_DB, Db, guarded, out
from curate.db import open_db

QUERY = """
WITH kept AS (SELECT source, split, count(*) n, sum(n_chars) chars FROM examples GROUP BY 1, 2),
     led AS (SELECT source, split, sum(duplicates) dups, sum(rejected) rej FROM ingests GROUP BY 1, 2)
SELECT coalesce(k.source, l.source) s, coalesce(k.split, l.split) sp, coalesce(k.n, 0), coalesce(k.chars, 0),
       coalesce(l.dups, 0), coalesce(l.rej, 0)
FROM kept k FULL JOIN led l ON k.source = l.source AND k.split = l.split ORDER BY s, sp
"""


def register(app: typer.Typer) -> None:
    app.command("sources")(sources)


@guarded
def sources(db: Db = DEFAULT_DB) -> None:
    """Show what is stored: examples, characters, duplicates skipped and rows rejected per source and split."""
    with open_db(db, read_only=True) as con:
        rows = con.execute(QUERY).fetchall()
    t = Table(title=f"sources in {db}")
    for col in ("source", "split", "examples", "characters", "duplicates", "rejects"):
        t.add_column(col, justify="left" if col in ("source", "split") else "right")
    for s, sp, n, chars, dups, rej in rows:
        t.add_row(s, sp, f"{n:,}", f"{int(chars):,}", f"{int(dups):,}", f"{int(rej):,}")
    out.print(t if rows else f"{db}: no data yet; run `curate ingest FILE`")
