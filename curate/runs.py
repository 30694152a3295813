"""Run folders: ids, the name of every file in them, manifests and the artefacts a method leaves (DESIGN.md §4).

``runs/<run_id>/`` holds ``config.yaml``, ``weights.json``, ``trajectory.parquet``, ``scores.parquet``,
``diagnostics.json``, ``checkpoints/``, ``base_model/``, ``model/``, ``data/`` and ``manifest.json``; a compare folder
holds ``compare_config.json``, ``cells/``, ``base/`` and ``runs/``. Only this module spells those names:
:class:`RunFolder` and :class:`CompareFolder` are what every command (and a user's script) uses to find them.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from curate import __version__
from curate.errors import ConfigError, DataError
from curate.io import atomic_path, write_json, write_text

if TYPE_CHECKING:
    from curate.methods.base import FitResult

log = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
DEFAULT_STORE = Path("curate.duckdb")
"""The store a command uses when neither ``--db`` nor ``CURATE_DB`` nor a run's manifest names one."""


def _path(name: str, doc: str) -> Any:
    return property(lambda self: self.root / name, doc=doc)


@dataclass(frozen=True)
class RunFolder:
    """The files of one ``curate reweight`` (or oracle) run, by name."""

    root: Path
    config = _path("config.yaml", "The resolved settings (a resumed run continues with them).")
    weights = _path("weights.json", "The per-source weights every method writes (DESIGN.md §4).")
    trajectory = _path("trajectory.parquet", "One row per step: p_<source> and the step's metrics.")
    scores = _path("scores.parquet", "Per-example scores of an example-level method.")
    diagnostics = _path("diagnostics.json", "The method's diagnostics and the tokenization report.")
    manifest = _path("manifest.json", "Fingerprints, counts, seeds, versions and output hashes.")
    checkpoints = _path("checkpoints", "The resumable state of ScaleBiO (checkpoints), LESS and RHO (their whole-pool "
                                       "passes, chunk by chunk; removed when the method finishes).")
    base_model = _path("base_model", "The untrained base model and tokenizer (resume and compare start here).")
    model = _path("model", "ScaleBiO's final w model (save_model=true).")
    data = _path("data", "The resampled rows (part-*.parquet).")

    def data_files(self) -> list[Path]:
        """The resampled Parquet parts, in order (empty before a resample)."""
        return sorted(self.data.glob("*.parquet")) if self.data.is_dir() else []


@dataclass(frozen=True)
class CompareFolder:
    """The files of one ``curate compare``: its config, one cached cell per (arm, seed), bases and arm runs."""

    root: Path
    config = _path("compare_config.json", "The comparison's settings and their hash.")

    def cell(self, arm: str, seed: int) -> Path:
        """The finished (arm, seed) result, reused when the settings are unchanged."""
        return self.root / "cells" / f"{arm}-seed{seed}.json"

    def base(self, seed: int) -> RunFolder:
        """Where seed ``seed``'s shared base model lives (``base/seedN/base_model``)."""
        return RunFolder(self.root / "base" / f"seed{seed}")

    def proxy_base(self, seed: int) -> RunFolder:
        """Where seed ``seed``'s proxy model lives (``--proxy-model``: the methods learn with it)."""
        return RunFolder(self.root / "proxy" / f"seed{seed}")

    def run(self, arm: str, seed: int) -> RunFolder:
        return RunFolder(self.root / "runs" / f"{arm}-seed{seed}")

    def run_id(self, arm: str, seed: int) -> str:
        """The id an arm's run is recorded under: ``<compare folder>/<arm>-seed<seed>``, unique per compare."""
        return f"{self.root.name}/{arm}-seed{seed}"


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
    return write_text(RunFolder(run_dir).config, yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path, flag: str = "--resume") -> Path:
    """The ``config.yaml`` an interrupted run was started with (a resumed run continues with those settings).

    Raises:
        ConfigError: the folder has none, naming ``flag``.
    """
    path = RunFolder(run_dir).config
    if not path.exists():
        raise ConfigError(f"{flag}: {run_dir} has no config.yaml; pass the folder of a `curate reweight` run")
    return path


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's ``manifest.json``, or an empty dict when there is none yet."""
    path = RunFolder(run_dir).manifest
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{path}: not valid JSON; delete it and re-run the command that wrote it") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: is JSON but not an object ({type(doc).__name__}); delete it and re-run the "
                        "command that wrote it")
    return doc


def update_manifest(run_dir: Path, **fields: Any) -> Path:
    """Merge ``fields`` into ``manifest.json`` (atomic), stamping the curate version."""
    return write_json(RunFolder(run_dir).manifest, manifest_with(run_dir, **fields))


def manifest_with(run_dir: Path, fresh: bool = False, **fields: Any) -> dict[str, Any]:
    """The manifest :func:`update_manifest` would write, without writing it.

    A writer that must replace ``data/`` and the manifest together (``curate resample``) builds the document first
    and writes it next to its data, so a failure while writing leaves both as they were. ``fresh`` starts from an
    empty manifest instead of the folder's own (a folder that a resample ``--out`` rewrites whole).
    """
    doc = {} if fresh else read_manifest(run_dir)
    doc.update(fields)
    doc["curate_version"] = __version__
    doc["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return doc


DB_KEY = "db"
"""The manifest key holding the absolute path of the store a run was made from (``curate reweight`` and
``curate resample`` write it), so a later ``curate resample RUN`` without ``--db`` reads the same store."""


def recorded_db(run_dir: Path) -> Path | None:
    """The store ``run_dir``'s manifest says it was made from, or None (no manifest, or an older run)."""
    value = read_manifest(run_dir).get(DB_KEY) if RunFolder(run_dir).manifest.exists() else None
    return Path(value) if isinstance(value, str) and value else None


def store_for(run: Path, db: Path | None) -> Path:
    """The store to draw from: ``--db`` (or ``CURATE_DB``) when given, else the one the run's manifest records,
    else ``curate.duckdb`` here; a run made from a store that has since moved says so instead of guessing.

    Raises:
        DataError: the recorded store is gone and there is no ``curate.duckdb`` here either.
    """
    if db is not None:
        return db
    recorded = recorded_db(run if run.is_dir() else run.parent)
    if recorded is None or recorded.exists():
        return recorded or DEFAULT_STORE
    if not DEFAULT_STORE.exists():
        raise DataError(f"{run}: its manifest.json records the store {recorded}, which does not exist; "
                        "pass --db FILE with the store it was made from")
    log.warning("%s was made from %s, which does not exist; using %s", run, recorded, DEFAULT_STORE)
    return DEFAULT_STORE


def write_result_files(run: RunFolder, result: FitResult) -> None:
    """A method's trajectory, per-example scores and diagnostics, each written atomically when it has them.

    The trajectory is one row per step: ``step``, one ``p_<source>`` column per weight and the step's metrics;
    scores are ``example_id, source, score`` and, for a method that selects rows, ``selected``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if result.trajectory:
        with atomic_path(run.trajectory) as tmp:
            pq.write_table(pa.Table.from_pylist([r.flat() for r in result.trajectory]), tmp)
    if result.scores:
        ids, srcs, vals = zip(*result.scores, strict=True)
        columns: dict[str, list[Any]] = {"example_id": [str(i) for i in ids], "source": list(srcs),
                                         "score": [float(v) for v in vals]}
        if result.selected is not None:
            chosen = {str(i) for i in result.selected}
            columns["selected"] = [i in chosen for i in columns["example_id"]]
        table = pa.table(columns)
        with atomic_path(run.scores) as tmp:
            pq.write_table(table, tmp)
    if result.diagnostics:
        write_json(run.diagnostics, result.diagnostics)
