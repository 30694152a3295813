"""`curate demo`: the main job on the embedded default, offline, on a CPU, with no arguments."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

import typer

from curate.cli._common import JsonLogs, Quiet, guarded, out


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@guarded
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Demo folder (corpus, database, runs, report).")] = Path(
        "demo"),
    seeds: Annotated[int, typer.Option(
        help="Seeds per method; two put seed-to-seed noise into the verdict's intervals.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="The first seed (runs seeds SEED .. SEED+SEEDS-1).")] = 0,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = (
        "uniform,temperature,less,rho,doremi,scalebio"),
    quiet: Quiet = False,
    json_logs: JsonLogs = False,
) -> None:
    """Build a reasoning-gym corpus with planted bad sources, run every method, compare, report."""
    from curate.cli.compare import print_summary, settings_for
    from curate.cli.ingest import report_table
    from curate.cli.progress import compare_progress
    from curate.compare import compare
    from curate.db import open_db
    from curate.demo import DEMO_BUDGET, DEMO_CONFIG, build_corpus
    from curate.ingest import ingest_paths

    files = build_corpus(out_dir / "corpus")
    db = out_dir / "curate.duckdb"
    with open_db(db) as con:
        reports = ingest_paths(con, [p for n, p in files.items() if not n.startswith("target")])
        reports += ingest_paths(con, [files["target_val"]], split="val", source="target")
        reports += ingest_paths(con, [files["target_test"]], split="test", source="target")
    if not quiet:
        out.print(report_table(reports, db))
    settings = settings_for(copy.deepcopy(DEMO_CONFIG), methods, DEMO_BUDGET, seeds, "val", "test", "tiny", "arith",
                            seed)
    with compare_progress(quiet, json_logs) as on_event:
        report = compare(db, settings, out_dir / "compare", on_event=on_event)
    print_summary(report, f"demo: 2-term arithmetic after fine-tuning on each method's {DEMO_BUDGET} rows",
                  out_dir / "compare" / "report.html")
