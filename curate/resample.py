"""`curate resample`: draw a dataset of a fixed budget from any method's weights (and scores).

One resampler for every method: per-source methods give ``weights.json``; example-level methods add
``scores.parquet``, and their sources are then walked best-first. Repetition is capped at ``max_epochs`` passes per
source (default :data:`curate.sampling.DEFAULT_MAX_EPOCHS`, 4), the surplus going to the sources with rows left.

The draw is SQL in DuckDB, and the rows go from the store to Parquet without passing through Python: for each
source, every row once per whole pass, then the first ``remainder`` rows in a seeded order (``md5`` of the seed and
the ``example_id``, ties broken by the id; best score first for a scored run), all of it in a seeded shuffle
(``md5`` of the seed, the id and the pass), written with ``COPY ... TO`` as ``data/part-NNNNN.parquet`` files of at
most about :data:`PART_BYTES` bytes in row groups of :data:`ROW_GROUP_ROWS` rows. That folder is what
``datasets.load_dataset("parquet", data_dir=...)``, Polars' ``scan_parquet`` and PyArrow read lazily. Rows carry
the stored columns plus provenance (``source``, ``example_id``, ``draw``: the pass, 0 for a row's first use).
``md5`` rather than DuckDB's ``hash()``: the same seed gives the same rows on every machine and DuckDB version.

``manifest.json`` records the input fingerprint (``weights_sha256``: the bytes of the weights the rows were drawn
from, which ``curate export`` checks), the store (``db``), allocation, repeats, ``max_epochs``, the sources the cap
held back (``capped``), the seed and the sha256 of every output file.

Everything is checked before anything is written (weights, sources, budget, ``--out``); then ``data/`` and the
manifest are built under temporary names and renamed into place (``data/`` swapped with the old one in one step
where the system can), so a failure (a full disk, a read-only folder, a kill) leaves the previous ``data/`` and
manifest as they were; the temporary files a kill leaves are removed by the next resample of that folder.
``--out X`` draws into ``X`` and copies the weights (and scores) there, leaving the run folder untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from curate.db import data_fingerprint, memory_capped, sources_in
from curate.errors import ConfigError, DataError
from curate.fs_errors import destination, fs_error, is_temporary
from curate.io import atomic_dir, atomic_path, sha256_file, write_bytes
from curate.runs import DB_KEY, RunFolder, manifest_with
from curate.sampling import (
    DEFAULT_MAX_EPOCHS,
    CapHit,
    check_budget,
    check_budget_fits,
    parse_max_epochs,
    plan_allocation,
)
from curate.weights import read_weights, validate_weights

# Written into the manifest of a folder that `resample --out` filled; such a folder may be rewritten by a later one.
FROM_KEY = "resampled_from"
DRAW_MEMORY_MB = 256
"""DuckDB's memory limit (MB) while the draw runs (:func:`curate.db.memory_capped`): the draw reads every row of the
drawn sources, and under the connection's 2 GB its cache made resample's peak RSS grow with the pool (400 MiB at 1M
rows, 762 at 4.2M); under this it stays within about 10% (128 MB runs out of memory at 4.2M rows). A draw that
needs more (a budget of many hundred thousand rows, sorted whole) is written again without the cap."""
PART_BYTES = 256 * 1024 * 1024
"""A data part is closed once it holds about this many bytes (the Hub and Spark like files of a few hundred MB)."""
ROW_GROUP_ROWS = 10_000
"""Rows per Parquet row group: small enough for streaming readers and the Hub's viewer (DuckDB rounds it up to a
multiple of 2,048)."""
COLUMNS = ("source", "example_id", "draw", "split", "prompt", "response", "text", "messages", "content_hash")
"""The columns of every data part, in order: provenance first, then the stored row."""


@dataclass
class ResampleResult:
    """Where the data went and how it was drawn."""

    run_dir: Path
    files: list[Path]
    allocation: dict[str, int]
    available: dict[str, int]
    repeats: dict[str, float]
    max_epochs: float | None = DEFAULT_MAX_EPOCHS
    capped: dict[str, CapHit] = field(default_factory=dict)
    """The sources ``max_epochs`` held back (rows wanted, allocated, cut)."""
    warnings: list[str] = field(default_factory=list)
    """One line per capped source and where the surplus went: what every command prints in its summary."""
    grouping: str | None = None
    """The ``--group-by`` grouping the allocation is over (its keys are then groups, ``source/cNN``)."""


def resample(con: duckdb.DuckDBPyConnection, run_or_weights: Path, *, budget: int, seed: int,
             max_epochs: float | None = DEFAULT_MAX_EPOCHS, out_dir: Path | None = None,
             split: str = "train") -> ResampleResult:
    """Draw ``budget`` training rows by the weights in a run folder (or a weights file) into ``data/``.

    A run folder is written in place unless ``out_dir`` names another folder: then the rows go to ``out_dir/data``
    and the weights (and scores) are copied next to them, so the run keeps its own draw. A bare weights file needs
    ``out_dir``. The budget is checked against the pool first (:func:`curate.sampling.check_budget_fits`), so ``0``
    or ``10**12`` is refused before any id is read and before anything is written. ``max_epochs`` caps the passes
    over any one source (default 4; ``None``: no cap) and hands the surplus to the sources with rows left; the
    sources it held back come back in ``capped`` and ``warnings`` and go into the manifest.

    Raises:
        ConfigError: a bad ``--budget``, ``--max-epochs`` or ``--out``.
        DataError: bad weights, unknown or empty sources, a budget the cap cannot hold, or a folder that cannot be
            written (named, with the fix).
    """
    check_budget(budget)
    max_epochs = parse_max_epochs(max_epochs)
    wpath, doc = read_weights(run_or_weights)
    raw = wpath.read_bytes()  # the exact bytes drawn from: hashed into the manifest, copied to --out
    units = Units.of(con, doc, split, wpath)
    available = units.available
    weights = validate_weights(doc["groups"] if units.grouping else doc["sources"], set(available),
                               where=str(wpath))
    src_dir = run_or_weights if run_or_weights.is_dir() else None
    run_dir = _target_dir(src_dir, wpath, out_dir)
    pool = {s: available.get(s, 0) for s in weights}
    check_budget_fits(budget, sum(n for s, n in pool.items() if weights[s] > 0), max_epochs)
    plan = plan_allocation(weights, budget, pool, max_epochs)
    alloc = plan.rows
    scores_path = RunFolder(src_dir).scores if src_dir is not None else None
    scores = _checked_scores(scores_path)
    repeats = {s: (alloc[s] / available[s] if available.get(s) else 0.0) for s in alloc}
    copied = run_dir.resolve() != wpath.parent.resolve()
    fields: dict[str, Any] = dict(
        kind="resample", budget=budget, seed=seed, max_epochs=max_epochs, split=split,
        input_fingerprint={"weights_sha256": hashlib.sha256(raw).hexdigest(),
                           "data": data_fingerprint(con, units.sources(weights))},
        weights_method=doc.get("method"), allocation=alloc, available=pool, repeats=repeats,
        capped=plan.capped_dict(), rows=budget, scored=scores is not None,
    )
    if units.grouping:
        fields["group_by"] = units.grouping
    store = _store_path(con)
    if store is not None:
        fields[DB_KEY] = store
    if copied:
        fields[FROM_KEY] = str((src_dir or wpath).resolve())
    manifest = manifest_with(run_dir, fresh=copied, **fields)  # an unreadable manifest is refused before writing
    run = RunFolder(run_dir)
    new = not run_dir.exists()
    query, params = draw_query(alloc, pool, seed, split, scores, units)
    with _write_boundary(run_dir, remove=new):
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run_dir)
        files = _write(con, run_dir, query, params, budget, manifest)
        if copied:  # after the manifest that marks the folder as resample's, so a rerun may always replace it
            write_bytes(run.weights, raw)
            _copy_scores(scores_path, run.scores)
    return ResampleResult(run_dir, files, alloc, pool, repeats, max_epochs, plan.capped, plan.warnings(),
                          units.grouping)


@dataclass(frozen=True)
class Units:
    """What the draw allocates over: sources, or for a ``--group-by`` run the groups of its grouping (the rows of
    each ``source/cNN``; the data parts then carry a ``group`` column)."""

    available: dict[str, int]
    grouping: str | None = None
    group_sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, doc: Mapping[str, Any], split: str, wpath: Path) -> Units:
        name = doc.get("group_by")
        if not name:
            return cls(sources_in(con, split))
        from curate.cluster.store import group_of_sql, is_current

        if not is_current(con, str(name)):
            raise DataError(f"{wpath}: learned on grouping {name!r}, which is gone or whose sources changed since; "
                            f"re-run `curate cluster --name {name}` and `curate reweight --group-by {name}`")
        got = con.execute(f"SELECT grp, count(*) FROM ({group_of_sql(str(name))}) WHERE split = ? GROUP BY 1",
                          [split]).fetchall()
        return cls({g: int(n) for g, n in got}, str(name), dict(doc.get("group_sources") or {}))

    @property
    def table(self) -> str:
        from curate.cluster.store import group_of_sql

        return "examples" if self.grouping is None else f"({group_of_sql(self.grouping)})"

    @property
    def column(self) -> str:
        return "source" if self.grouping is None else "grp"

    def sources(self, weights: Mapping[str, float]) -> list[str]:
        """The stored sources behind ``weights``' units (for the data fingerprint)."""
        return sorted({self.group_sources.get(u, u) for u in weights}) if self.grouping else sorted(weights)


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


def _checked_scores(path: Path | None) -> Path | None:
    """``scores.parquet`` when the run has one, after checking it holds ``example_id`` and ``score`` (read by the
    draw itself, in DuckDB)."""
    if path is None or not path.exists():
        return None
    con = duckdb.connect()
    try:
        con.execute("SELECT example_id::VARCHAR, score::DOUBLE FROM read_parquet(?) LIMIT 0", [str(path)])
    except duckdb.Error as e:
        raise DataError(f"{path}: not readable Parquet ({str(e).splitlines()[0][:200]}); re-run `curate reweight` "
                        "or delete it to resample by weights alone") from None
    finally:
        con.close()
    return path


_ROW = ", ".join(f"e.{c}" for c in COLUMNS if c != "draw")
# Unscored rows rank as -inf and NaN scores last, ties by id: an example-level method only vouches for what it
# scored, and the order stays total (the same rows for the same scores).
_SCORED = """scored AS (SELECT example_id::VARCHAR AS example_id, max(score::DOUBLE) AS score
                       FROM read_parquet($scores) GROUP BY 1)"""
_BEST_FIRST = ("LEFT JOIN scored sc ON sc.example_id = c.example_id",
               "isnan(coalesce(sc.score, '-inf'::DOUBLE)), coalesce(sc.score, '-inf'::DOUBLE) DESC, c.example_id")
# Within one source and split the content hash identifies a row as well as its example_id (which is derived from
# it) and is stored, so the seeded order costs one md5 per row instead of two.
_SEEDED = ("", "md5_number($pick || c.content_hash), c.content_hash")


def draw_query(allocation: Mapping[str, int], available: Mapping[str, int], seed: int, split: str,
               scores: Path | None = None, units: Units | None = None) -> tuple[str, dict[str, Any]]:
    """The SQL (and its named parameters) that selects the drawn rows, in output order.

    Per source with ``k`` rows allotted out of ``n``: every row once for each of the ``k // n`` whole passes
    (``draw`` 0, 1, ...), then the first ``k % n`` rows by the seeded order (``md5`` of ``pick:<seed>:`` and the
    row's content hash; best score first when ``scores`` is given) as pass ``k // n``. So no row is used ``p + 1``
    times before every row was used ``p`` times, and the counts per source are exact. The remainder is chosen on
    the narrow key columns and only its rows are read whole (a top-k over the full rows would build every row's
    text and messages). The union is ordered by ``md5`` of ``order:<seed>:``, the id and the pass, so sources and
    passes are interleaved and a training loop reading the files in order sees a shuffled stream. Each source's
    rows depend only on the seed and its own rows, not on which other sources are drawn. With ``units`` of a
    grouping, all of this holds per group, and a ``group`` column follows ``source``.
    """
    units = units or Units({})
    table, unit = units.table, units.column
    row = _ROW + (", e.grp" if units.grouping else "")
    join, order = _BEST_FIRST if scores is not None else _SEEDED
    params: dict[str, Any] = {"split": split, "order": f"order:{seed}:"}
    if scores is not None:
        params["scores"] = str(scores)
    branches = []
    for i, source in enumerate(sorted(s for s, k in allocation.items() if k > 0)):
        passes, rem = divmod(int(allocation[source]), int(available[source]))
        params[f"s{i}"] = source
        where = f"e.split = $split AND e.{unit} = $s{i}"
        if passes:
            branches.append(f"SELECT {row}, p.draw FROM {table} e CROSS JOIN range({passes}) p(draw) WHERE {where}")
        if rem:
            if scores is None:
                params["pick"] = f"pick:{seed}:"  # DuckDB refuses a parameter the query does not use
            first = (f"SELECT c.content_hash FROM {table} c {join} WHERE c.split = $split AND c.{unit} = $s{i} "
                     f"ORDER BY {order} LIMIT {rem}")
            branches.append(f"SELECT {row}, {passes} AS draw FROM {table} e WHERE {where} "
                            f"AND e.content_hash IN ({first})")
    cte = f"WITH {_SCORED} " if scores is not None else ""
    union = " UNION ALL ".join(branches)
    cols = ", ".join("d.draw::INTEGER AS draw" if c == "draw" else f"d.{c}" for c in COLUMNS)
    if units.grouping:
        cols = cols.replace("d.source, ", 'd.source, d.grp AS "group", ', 1)
    sql = (f"{cte}SELECT {cols} FROM ({union}) d "
           "ORDER BY md5_number($order || d.example_id || ':' || d.draw), d.example_id, d.draw")
    return sql, params


def _write(con: duckdb.DuckDBPyConnection, run_dir: Path, query: str, params: dict[str, Any], rows: int,
           manifest: dict[str, Any]) -> list[Path]:
    """``data/`` and the manifest, each under a temporary name first: the manifest's bytes are written before
    ``data/`` is swapped in and renamed right after, so a failure while writing leaves both as they were."""
    run = RunFolder(run_dir)
    with atomic_path(run.manifest) as tmp_manifest:
        with atomic_dir(run.data) as tmp:
            written = _copy_capped(con, query, params, tmp)
            if written != rows:  # the counts were read from the same read-only connection: a bug, not bad input
                raise RuntimeError(f"resample wrote {written} rows, expected {rows}")
            outputs = {f"{run.data.name}/{p.name}": sha256_file(p) for p in sorted(tmp.glob("*.parquet"))}
            doc = {**manifest, "outputs": outputs}
            tmp_manifest.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return run.data_files()


def _copy_capped(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], folder: Path) -> int:
    """:func:`copy_parquet` under :data:`DRAW_MEMORY_MB`; a draw too big to sort in it (600,000 rows in
    tests/curate/test_kill9.py: DuckDB's sort then needs more than it can spill) runs out of memory and is written
    again under the connection's own limit."""
    try:
        with memory_capped(con, DRAW_MEMORY_MB):
            return copy_parquet(con, query, params, folder)
    except duckdb.OutOfMemoryException:
        for part in folder.iterdir():
            part.unlink()
        return copy_parquet(con, query, params, folder)


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what a killed resample left in ``run_dir``: its temporary ``data/`` and manifest (``.data.*.tmp``,
    ``.manifest.json.*.tmp``) and a previous ``data/`` it was swapping out (``.data.old``, by earlier versions).
    Nothing reads them, and a draw's temporary folder may hold gigabytes. Returns the names removed."""
    run = RunFolder(run_dir)
    mine = {run.data.name, run.manifest.name}
    gone = []
    for p in run_dir.iterdir():
        if not is_temporary(p.name) or destination(p).name not in mine:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p.name)
    return gone


_PART = re.compile(r"part-(\d+)\.parquet")


def copy_parquet(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], folder: Path) -> int:
    """Write ``query``'s rows, in its order, as ``folder/part-NNNNN.parquet`` straight from DuckDB; returns the
    row count. Parts close at about :data:`PART_BYTES`; DuckDB numbers them ``part-0, part-1, ...`` and they are
    renamed zero-padded so that sorting the names gives the row order."""
    dest = str(folder).replace("'", "''")
    got = con.execute(
        f"COPY ({query}) TO '{dest}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {int(ROW_GROUP_ROWS)}, "
        f"FILE_SIZE_BYTES {int(PART_BYTES)}, FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)",
        params,
    ).fetchone()
    for path in list(folder.iterdir()):
        m = _PART.fullmatch(path.name)
        if m is not None:
            os.replace(path, folder / f"part-{int(m.group(1)):05d}.parquet")
    return int(got[0]) if got else 0
