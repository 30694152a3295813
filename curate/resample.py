"""`curate resample`: draw a dataset of a fixed budget from any method's weights (and scores).

One resampler for every method: per-source methods give ``weights.json``; example-level methods add
``scores.parquet``, and their sources are then walked best-first. Output: ``data/part-00000.parquet`` with the stored
columns plus provenance (``source``, ``example_id``, ``draw``), and ``manifest.json`` with the input fingerprint,
allocation, repeats, seed and the sha256 of every output file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from curate.db import data_fingerprint, sources_in
from curate.errors import DataError
from curate.io import atomic_dir, sha256_file, write_bytes
from curate.runs import RunFolder, update_manifest
from curate.sampling import allocate, draw
from curate.weights import read_weights, validate_weights


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

    A run folder is written in place; a bare weights file needs ``out_dir`` (the weights are copied there).
    """
    wpath, doc = read_weights(run_or_weights)
    available = sources_in(con, split)
    weights = validate_weights(doc["sources"], set(available), where=str(wpath))
    run_dir = run_or_weights if run_or_weights.is_dir() else out_dir
    if run_dir is None:
        raise DataError(f"{wpath}: a bare weights file needs --out DIR for the resampled data")
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunFolder(run_dir)
    if run_dir.resolve() != wpath.parent.resolve():
        write_bytes(run.weights, wpath.read_bytes())
    alloc = allocate(weights, budget, {s: available.get(s, 0) for s in weights}, max_epochs)
    ids = _ids_by_source(con, [s for s, k in alloc.items() if k > 0], split)
    scores = _scores(run, ids)
    srcs, exs, draws = draw(ids, alloc, seed, scores)
    files = _write(con, run_dir, srcs, exs, draws, split)
    repeats = {s: (alloc[s] / available[s] if available.get(s) else 0.0) for s in alloc}
    update_manifest(
        run_dir, kind="resample", budget=budget, seed=seed, max_epochs=max_epochs, split=split,
        input_fingerprint={"weights_sha256": sha256_file(run.weights),
                           "data": data_fingerprint(con, sorted(weights))},
        weights_method=doc.get("method"), allocation=alloc, available={s: available.get(s, 0) for s in alloc},
        repeats=repeats, rows=len(exs), scored=scores is not None,
        outputs={str(f.relative_to(run_dir)): sha256_file(f) for f in files},
    )
    return ResampleResult(run_dir, files, alloc, {s: available.get(s, 0) for s in alloc}, repeats)


def _ids_by_source(con: duckdb.DuckDBPyConnection, sources: list[str], split: str) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT source, list(example_id ORDER BY example_id) FROM examples WHERE split = ? "
        "AND source IN (SELECT unnest(?)) GROUP BY source", [split, sources]
    ).fetchall()
    return {s: list(v) for s, v in rows}


def _scores(run: RunFolder, ids: dict[str, list[str]]) -> dict[str, np.ndarray] | None:
    path = run.scores
    if not path.exists():
        return None
    con = duckdb.connect()
    try:
        found = dict(con.execute("SELECT example_id, score FROM read_parquet(?)", [str(path)]).fetchall())
    finally:
        con.close()
    # Unscored rows go last: an example-level method only vouches for what it scored.
    return {s: np.asarray([found.get(i, -np.inf) for i in v], dtype=np.float64) for s, v in ids.items()}


def _write(con: duckdb.DuckDBPyConnection, run_dir: Path, srcs: list[str], exs: list[str], draws: np.ndarray,
           split: str) -> list[Path]:
    picks = pa.table({"pos": pa.array(np.arange(len(exs), dtype=np.int64)), "example_id": pa.array(exs, pa.string()),
                      "draw": pa.array(draws, pa.int32())})
    con.register("_curate_picks", picks)
    try:
        with atomic_dir(RunFolder(run_dir).data) as tmp:
            out = str(tmp / "part-00000.parquet").replace("'", "''")
            con.execute(
                f"""COPY (SELECT e.source, p.example_id, p.draw, e.split, e.prompt, e.response, e.text, e.messages,
                           e.content_hash
                    FROM _curate_picks p JOIN examples e ON e.example_id = p.example_id
                    ORDER BY p.pos) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
            )
    finally:
        con.unregister("_curate_picks")
    return RunFolder(run_dir).data_files()
