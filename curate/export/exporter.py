"""``export_run``: a run's resampled data as a folder ``datasets.load_dataset`` reads, with a dataset card."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa

from curate import __version__
from curate.errors import ConfigError
from curate.export.card import render_card
from curate.export.reader import RunData, iter_parts, open_run, output_schema
from curate.export.writers import FORMATS, WRITERS
from curate.fs_errors import fs_error
from curate.io import atomic_dir, sha256_file, write_json

log = logging.getLogger(__name__)

# Written last into every export; its presence is what lets a later export replace the folder without --force.
MARKER = "curate_export.json"

ExportFormat = Literal["parquet", "jsonl", "hf"]


def check_out_dir(out_dir: Path | str, run_dir: Path | str, *, force: bool = False) -> Path:
    """Validate ``--out`` before any work.

    Rules: the path as given has no ``..`` component and names a folder (not ``.`` or ``/``); it is neither
    the run folder, one of its parents, nor inside its ``data/``; and an existing non-empty folder is replaced
    only when an earlier ``curate export`` wrote it (it holds ``curate_export.json``) or ``force`` is set.
    """
    out = Path(out_dir)
    if ".." in out.parts:
        raise ConfigError(f"--out {out_dir}: '..' is not allowed in the export path; give it without '..'")
    if out.name in ("", ".", "..") or str(out_dir).strip() == "":
        raise ConfigError(f"--out {out_dir!r} does not name a folder; give a new folder such as exports/mix")
    resolved, run = out.resolve(), Path(run_dir).resolve()
    if resolved == run or resolved in run.parents:
        raise ConfigError(
            f"--out {out_dir} would replace the run folder {run_dir}; choose a folder outside it"
        )
    if resolved == run / "data" or run / "data" in resolved.parents:
        raise ConfigError(f"--out {out_dir} is inside the run's data/ folder; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise ConfigError(
            f"--out {out_dir} is a non-empty folder not written by curate export; "
            "choose a new or empty folder, or pass --force to replace it"
        )
    return out


def _counting(parts: Iterator[Iterator[pa.Table]], total: list[int]) -> Iterator[Iterator[pa.Table]]:
    for tables in parts:
        yield _count(tables, total)


def _count(tables: Iterator[pa.Table], total: list[int]) -> Iterator[pa.Table]:
    for table in tables:
        total[0] += table.nbytes
        yield table


def export_run(
    run_dir: Path | str,
    out_dir: Path | str,
    fmt: ExportFormat = "parquet",
    messages: bool = False,
    *,
    force: bool = False,
) -> Path:
    """Export the resampled rows of ``run_dir`` to ``out_dir`` as ``fmt``, with a card; returns ``out_dir``.

    The folder is built under a temporary name and renamed into place, replacing an earlier export at once.
    ``messages=True`` writes ``messages`` as a list of ``{role, content}`` structs instead of a JSON string.
    Raises :class:`ConfigError` for a bad ``--format``/``--out`` and :class:`DataError` for a missing or
    inconsistent run folder (e.g. no ``data/``: run ``curate resample`` first).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}; pick one of them")
    out = check_out_dir(out_dir, run_dir, force=force)
    run = open_run(run_dir, messages=messages)
    schema = output_schema(run.schema, messages=messages)
    try:
        _write(run, out, fmt, messages, schema)
    except OSError as e:  # a full disk or a read-only folder; the atomic writer has removed its temporary folder
        mapped = fs_error(e, _named(e, out))
        if mapped is None:
            raise
        raise mapped from None
    log.info("exported %d rows from %s to %s (%s)", run.num_rows, run.run_dir, out, fmt)
    return out


def _named(e: OSError, out: Path) -> Path:
    """The path to name: the export folder, unless the fault was reading one of the run's own files."""
    name = getattr(e, "filename", None)
    return Path(name) if isinstance(name, str) and name else out


def _write(run: RunData, out: Path, fmt: ExportFormat, messages: bool, schema: pa.Schema) -> None:
    """The export folder under a temporary name (shards, card, marker last), renamed into place at the end."""
    with atomic_dir(out) as tmp:
        nbytes = [0]
        parts = _counting(iter_parts(run, messages=messages), nbytes)
        paths = WRITERS[fmt](parts, tmp, len(run.parts), schema)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in paths}
        card = render_card(
            run,
            schema,
            fmt,
            files,
            num_bytes=nbytes[0],
            download_size=sum(p.stat().st_size for p in paths),
            messages=messages,
            exporter_version=__version__,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_json(
            tmp / MARKER,
            {
                "format": fmt,
                "messages": messages,
                "num_rows": run.num_rows,
                "rows_per_source": run.rows_per_source,
                "method": run.weights.get("method"),
                "run": run.run_dir.name,
                "files": files,
                "curate_version": __version__,
            },
        )
