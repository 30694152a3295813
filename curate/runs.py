"""Run folders: ids, layout and manifests (DESIGN.md §4).

``runs/<run_id>/`` holds ``config.yaml``, ``weights.json``, ``trajectory.parquet``, ``checkpoints/``, ``data/`` and
``manifest.json``. Only this module decides where those live.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from curate import __version__
from curate.errors import ConfigError, DataError
from curate.io import write_json, write_text

RUNS_DIR = Path("runs")


def new_run_id(kind: str) -> str:
    """``<kind>-<UTC timestamp>-<4 hex>``: sortable and unique enough for one machine."""
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def safe_out_dir(out: Path | None, kind: str) -> Path:
    """The folder a command writes to: ``--out`` as given (no ``..`` components), else a new ``runs/<id>``.

    Raises:
        ConfigError: ``--out`` contains ``..`` or names an existing file.
    """
    if out is None:
        return RUNS_DIR / new_run_id(kind)
    if ".." in Path(out).parts:
        raise ConfigError(f"--out: {out} contains '..'; give a folder path without parent references")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file; give a folder path")
    return out


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Save the resolved config as ``config.yaml`` (atomic)."""
    return write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's ``manifest.json``, or an empty dict when there is none yet."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{path}: not valid JSON; delete it and re-run the command that wrote it") from None


def update_manifest(run_dir: Path, **fields: Any) -> Path:
    """Merge ``fields`` into ``manifest.json`` (atomic), stamping the curate version."""
    doc = read_manifest(run_dir)
    doc.update(fields)
    doc["curate_version"] = __version__
    doc["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return write_json(run_dir / "manifest.json", doc)
