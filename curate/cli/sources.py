"""`curate sources`: sources x splits with counts, characters, duplicates and rejects."""

from __future__ import annotations

import typer
from rich.text import Text

from curate.cli._common import DEFAULT_DB, Db, guarded, out
from curate.cli.ingest import compact_table, framed
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
    if not rows:
        out.print(f"{db}: no data yet; run `curate ingest FILE`", highlight=False, markup=False)
        return
    t = compact_table()
    t.add_column("source", overflow="fold", min_width=8)
    t.add_column("split", no_wrap=True)
    for col in ("examples", "characters", "duplicates", "rejects"):
        t.add_column(col, justify="right", no_wrap=True)
    for s, sp, n, chars, dups, rej in rows:
        t.add_row(Text(s), Text(sp), f"{n:,}", f"{int(chars):,}", f"{int(dups):,}", f"{int(rej):,}")
    out.print(framed(f"sources in {db}", t))
