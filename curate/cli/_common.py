"""Options spelled the same on every command, the error guard, and the shared Rich consoles."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from curate.errors import CurateError, Interrupted
from curate.logs import setup_logging
from curate.runs import DEFAULT_STORE

F = TypeVar("F", bound=Callable[..., Any])

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Db = Annotated[Path, typer.Option("--db", help="DuckDB file (default: curate.duckdb).", envvar="CURATE_DB")]
NewDb = Annotated[Path, typer.Option("--db", help="DuckDB file (created if missing).", envvar="CURATE_DB")]
Out = Annotated[Path | None, typer.Option("--out", help="Folder to write (default: a new folder under runs/).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed and input give the same output.")]
ConfigPath = Annotated[Path | None, typer.Option("--config", help="YAML config; trailing key=value overrides it.")]


def _quiet(value: bool) -> bool:
    if value:
        setup_logging(quiet=True)
    return value


def _json_logs(value: bool) -> bool:
    if value:
        setup_logging(json_logs=True)
    return value


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors, warnings and the final path.",
                                     callback=_quiet)]
JsonLogs = Annotated[bool, typer.Option("--json-logs", help="Log (and report each step) as one JSON line on stderr.",
                                        callback=_json_logs)]

DEFAULT_DB = DEFAULT_STORE
RunDb = Annotated[Path | None, typer.Option(
    "--db", envvar="CURATE_DB",
    help="DuckDB file (default: the store RUN was made from, as its manifest.json records; else curate.duckdb).")]


def guarded(fn: F) -> F:
    """Run a command body, turning CurateError into one line and exit 2, anything else into exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            if not _rank_of_a_launched_job():
                err.print(f"[yellow]interrupted:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except CurateError as e:  # escaped: "pip install 'curate[train]'" is not Rich markup
            err.print(f"[bold red]error:[/] {escape(_scrub(str(e)))}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if not _rank_of_a_launched_job():
                err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - the one place unexpected failures are reported
            from curate.fs_errors import os_error_message

            fault = os_error_message(e)  # a full disk or a read-only folder is the user's to fix: exit 2
            if fault is not None:
                err.print(f"[bold red]error:[/] {escape(_scrub(fault))}", highlight=False)
                raise typer.Exit(2) from None
            if os.environ.get("CURATE_DEBUG"):
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            err.print(f"[bold red]unexpected error:[/] {type(e).__name__}: {escape(_scrub(first))} "
                      "(set CURATE_DEBUG=1 for the traceback)", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _rank_of_a_launched_job() -> bool:
    """The launching command says once how a Ctrl-C ended the job and how to go on (with ``--nproc``), so the
    ranks it started stay quiet about it."""
    from curate.launch import current_rank

    return current_rank().launched


def _scrub(text: str) -> str:
    from curate.secrets import scrub

    return scrub(text)
