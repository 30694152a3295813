"""The `curate` command line: one thin module per command, errors mapped to exit codes.

Exit codes: 0 ok, 2 bad input or config (one line naming the file, row or flag and the fix), 1 unexpected failure
(one line; set CURATE_DEBUG=1 for the traceback), 130 interrupted.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="curate",
    help="Learn which training data an LLM should see: per-source weights (ScaleBiO) and baselines, compared "
    "on your target, exported as Parquet or Hugging Face datasets.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def _setup() -> None:
    # logging is configured here, once per command; --quiet and --json-logs refine it (curate.logs)
    from curate.logs import setup_logging

    setup_logging(quiet=False, json_logs=False)


def _register() -> None:
    from curate.cli import cluster, compare, demo, drop, export, ingest, rejects, resample, reweight, runs, sources

    for mod in (ingest, sources, rejects, drop, cluster, reweight, resample, export, compare, demo, runs):
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    from curate.threads import configure_openmp

    configure_openmp()  # before any command imports torch
    app()
