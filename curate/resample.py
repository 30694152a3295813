"""`curate resample`: draw a dataset of a fixed budget from any method's weights (and scores).

One resampler for every method: per-source methods give ``weights.json``; example-level methods add
``scores.parquet``, and their sources are then walked best-first. Output: ``data/part-00000.parquet`` with the stored
columns plus provenance (``source``, ``example_id``, ``draw``), and ``manifest.json`` with the input fingerprint
(``weights_sha256``: the bytes of the weights the rows were drawn from, which ``curate export`` checks), the store
(``db``), allocation, repeats, seed and the sha256 of every output file.

Everything is checked before anything is written (weights, sources, budget, ``--out``); then ``data/`` and the
manifest are built under temporary names and renamed into place, so a failure (a full disk, a read-only folder, a
kill) leaves the previous ``data/`` and manifest as they were. ``--out X`` draws into ``X`` and copies the
weights (and scores) there, leaving the run folder untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.db import data_fingerprint, sources_in
from curate.errors import ConfigError, DataError
from curate.fs_errors import fs_error, is_temporary
from curate.io import atomic_dir, atomic_path, sha256_file, write_bytes
from curate.runs import DB_KEY, RunFolder, manifest_with
from curate.sampling import allocate, check_budget, check_budget_fits, draw
from curate.weights import read_weights, validate_weights

# Written into the manifest of a folder that `resample --out` filled; such a folder may be rewritten by a later one.
FROM_KEY = "resampled_from"


@dataclass
class ResampleResult:
    """Where the data went and how it was drawn."""

    run_dir: Path
    files: list[Path]
    allocation: dict[str, int]
    available: dict[str, int]
    repeats: dict[str, float]


def resample(con: duckdb.DuckDBPyConnection, run_or_weights: Path, *, budget: int, seed: int,
             max_epochs: float | None = None, out_dir: Path | None = None,
             split: str = "train") -> ResampleResult:
    """Draw ``budget`` training rows by the weights in a run folder (or a weights file) into ``data/``.

    A run folder is written in place unless ``out_dir`` names another folder: then the rows go to ``out_dir/data``
    and the weights (and scores) are copied next to them, so the run keeps its own draw. A bare weights file needs
    ``out_dir``. The budget is checked against the pool first (:func:`curate.sampling.check_budget_fits`), so ``0``
    or ``10**12`` is refused before any id is read and before anything is written.

    Raises:
        ConfigError: a bad ``--budget``, ``--max-epochs`` or ``--out``.
        DataError: bad weights, unknown or empty sources, or a folder that cannot be written (named, with the fix).
    """
    check_budget(budget)
    wpath, doc = read_weights(run_or_weights)
    raw = wpath.read_bytes()  # the exact bytes drawn from: hashed into the manifest, copied to --out
    available = sources_in(con, split)
    weights = validate_weights(doc["sources"], set(available), where=str(wpath))
    src_dir = run_or_weights if run_or_weights.is_dir() else None
    run_dir = _target_dir(src_dir, wpath, out_dir)
    pool = {s: available.get(s, 0) for s in weights}
    check_budget_fits(budget, sum(n for s, n in pool.items() if weights[s] > 0), max_epochs)
    alloc = allocate(weights, budget, pool, max_epochs)
    ids = _ids_by_source(con, [s for s, k in alloc.items() if k > 0], split)
    scores_path = RunFolder(src_dir).scores if src_dir is not None else None
    scores = _scores(scores_path, ids)
    _, exs, draws = draw(ids, alloc, seed, scores)  # each row's source comes back with it in the join
    repeats = {s: (alloc[s] / available[s] if available.get(s) else 0.0) for s in alloc}
    copied = run_dir.resolve() != wpath.parent.resolve()
    fields: dict[str, Any] = dict(
        kind="resample", budget=budget, seed=seed, max_epochs=max_epochs, split=split,
        input_fingerprint={"weights_sha256": hashlib.sha256(raw).hexdigest(),
                           "data": data_fingerprint(con, sorted(weights))},
        weights_method=doc.get("method"), allocation=alloc, available=pool, repeats=repeats,
        rows=len(exs), scored=scores is not None,
    )
    store = _store_path(con)
    if store is not None:
        fields[DB_KEY] = store
    if copied:
        fields[FROM_KEY] = str((src_dir or wpath).resolve())
    manifest = manifest_with(run_dir, fresh=copied, **fields)  # an unreadable manifest is refused before writing
    run = RunFolder(run_dir)
    new = not run_dir.exists()
    with _write_boundary(run_dir, remove=new):
        run_dir.mkdir(parents=True, exist_ok=True)
        files = _write(con, run_dir, exs, draws, manifest)
        if copied:  # after the manifest that marks the folder as resample's, so a rerun may always replace it
            write_bytes(run.weights, raw)
            _copy_scores(scores_path, run.scores)
    return ResampleResult(run_dir, files, alloc, pool, repeats)


def _target_dir(src_dir: Path | None, wpath: Path, out_dir: Path | None) -> Path:
    """Where the draw goes; refuses an ``--out`` that would overwrite something resample did not write."""
    if out_dir is None:
        if src_dir is None:
            raise ConfigError(f"{wpath}: a bare weights file needs --out DIR for the resampled data")
        return src_dir
    out = Path(out_dir)
    if ".." in out.parts:
        raise ConfigError(f"--out {out}: contains '..'; give a folder path without parent references")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder path")
    home = (src_dir or wpath.parent).resolve()
    if out.resolve() == home:
        return out  # the run itself (or the weights file's own folder): in place
    if out.resolve() == (home / "data") or (home / "data") in out.resolve().parents:
        raise ConfigError(f"--out {out}: is inside {home / 'data'}, which a resample replaces; choose a folder "
                          "outside it")
    if out.is_dir() and _holds_files(out) and not _written_by_resample(out):
        raise ConfigError(f"--out {out}: is a non-empty folder that `curate resample --out` did not write (it "
                          "would lose its weights.json or data/); choose a new or empty folder")
    return out


def _holds_files(folder: Path) -> bool:
    """Anything but what a killed writer left behind (temporary names no reader looks at)."""
    return any(not is_temporary(p.name) for p in folder.iterdir())


def _written_by_resample(folder: Path) -> bool:
    try:
        doc = json.loads(RunFolder(folder).manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == "resample" and bool(doc.get(FROM_KEY))


def _store_path(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return str(Path(rows[0][0]).resolve()) if rows and rows[0][0] else None


@contextmanager
def _write_boundary(run_dir: Path, remove: bool) -> Iterator[None]:
    """A full disk, a read-only folder or a quota becomes a DataError naming the folder (the writers already
    removed their temporary files); anything else propagates. ``remove``: the folder is this call's own (a new
    ``--out``), so a failure removes it rather than leave a folder holding half of what it should."""
    try:
        yield
    except BaseException as e:
        if remove:
            shutil.rmtree(run_dir, ignore_errors=True)
        if not isinstance(e, OSError | duckdb.IOException):
            raise
        mapped = fs_error(e, _named(e, run_dir))
        if mapped is None:
            raise
        raise mapped from None


def _named(e: BaseException, run_dir: Path) -> Path:
    name = getattr(e, "filename", None)
    return Path(name) if isinstance(name, str) and name else RunFolder(run_dir).data


def _copy_scores(src: Path | None, dest: Path) -> None:
    if src is not None and src.exists():
        write_bytes(dest, src.read_bytes())
    else:
        dest.unlink(missing_ok=True)  # a stale copy from an earlier --out would otherwise rank the rows


def _ids_by_source(con: duckdb.DuckDBPyConnection, sources: list[str], split: str) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT source, list(example_id ORDER BY example_id) FROM examples WHERE split = ? "
        "AND source IN (SELECT unnest(?)) GROUP BY source", [split, sources]
    ).fetchall()
    return {s: list(v) for s, v in rows}


def _scores(path: Path | None, ids: dict[str, list[str]]) -> dict[str, np.ndarray] | None:
    if path is None or not path.exists():
        return None
    con = duckdb.connect()
    try:
        found = dict(con.execute("SELECT example_id, score FROM read_parquet(?)", [str(path)]).fetchall())
    except duckdb.Error as e:
        raise DataError(f"{path}: not readable Parquet ({str(e).splitlines()[0][:200]}); re-run `curate reweight` "
                        "or delete it to resample by weights alone") from None
    finally:
        con.close()
    # Unscored rows go last: an example-level method only vouches for what it scored.
    return {s: np.asarray([found.get(i, -np.inf) for i in v], dtype=np.float64) for s, v in ids.items()}


def _write(con: duckdb.DuckDBPyConnection, run_dir: Path, exs: list[str], draws: np.ndarray,
           manifest: dict[str, Any]) -> list[Path]:
    """``data/`` and the manifest, each under a temporary name first: the manifest's bytes are written before
    ``data/`` is swapped in and renamed right after, so a failure while writing leaves both as they were."""
    run = RunFolder(run_dir)
    picks = pa.table({"pos": pa.array(np.arange(len(exs), dtype=np.int64)), "example_id": pa.array(exs, pa.string()),
                      "draw": pa.array(draws, pa.int32())})
    con.register("_curate_picks", picks)
    try:
        with atomic_path(run.manifest) as tmp_manifest:
            with atomic_dir(run.data) as tmp:
                part = tmp / "part-00000.parquet"
                out = str(part).replace("'", "''")
                con.execute(
                    f"""COPY (SELECT e.source, p.example_id, p.draw, e.split, e.prompt, e.response, e.text,
                               e.messages, e.content_hash
                        FROM _curate_picks p JOIN examples e ON e.example_id = p.example_id
                        ORDER BY p.pos) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
                )
                outputs = {f"{run.data.name}/{p.name}": sha256_file(p) for p in sorted(tmp.glob("*.parquet"))}
                doc = {**manifest, "outputs": outputs}
                tmp_manifest.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    finally:
        con.unregister("_curate_picks")
    return run.data_files()
