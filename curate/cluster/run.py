"""``curate cluster`` as two library calls: :func:`prepare` checks everything, :func:`cluster` does the work.

``prepare`` reads the store read-only and refuses bad input (k < 2, an unknown or empty ``--sources``, a source
with fewer train rows than k, an unknown ``--target``, a missing store or extra) before anything is embedded.
``cluster`` embeds each chosen source's train rows, fits k centroids per source (or k over all of them with
``joint``), labels every row ``{source}/c{NN}``, assigns the target rows to their nearest centroid (over every
source's centroids) for the summary, then writes the grouping in one transaction. The store is only read while
embedding, so other readers are not locked out; the write checks that the chosen sources did not change meanwhile.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.cluster import kmeans
from curate.cluster.embed import CHUNK, MAX_CHARS, Embedder, EmbedSpec, build_embedder, embed_rows, resolve_embed
from curate.cluster.store import grouping_settings, write_grouping
from curate.corpus import SPLIT_NAMES
from curate.db import data_fingerprint, is_interrupt, open_db
from curate.errors import ConfigError, DataError, Interrupted

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAMPLES = 3


@dataclass(frozen=True)
class ClusterRequest:
    """The command line of ``curate cluster``, unchecked."""

    db: Path
    k: int
    sources: str = "all"
    embed: str | None = None
    name: str | None = None
    joint: bool = False
    seed: int = 0
    model: str = "tiny"
    target: str = "val"


@dataclass(frozen=True)
class ClusterPlan:
    """A checked request: the chosen sources and their train rows, the target rows, the settings to record."""

    request: ClusterRequest
    name: str
    spec: EmbedSpec
    counts: dict[str, int]
    target_where: str
    target_args: list[Any]
    n_target: int
    settings: dict[str, Any]
    previous: dict[str, Any] | None

    @property
    def n_chunks(self) -> int:
        """Embedding steps (one per :data:`CHUNK` rows) for a progress bar."""
        pool = [sum(self.counts.values())] if self.request.joint else list(self.counts.values())
        return sum(-(-n // CHUNK) for n in [*pool, self.n_target])


@dataclass(frozen=True)
class GroupSummary:
    """One printed row: a group (``web/c03``), or with ``joint`` a cluster (``c03``) and its rows per source."""

    label: str
    sources: dict[str, int]
    size: int
    samples: list[str]
    target_share: float | None


@dataclass(frozen=True)
class ClusterResult:
    """What was stored, and the summary to print."""

    name: str
    groups: list[GroupSummary]
    n_rows: int
    n_target: int
    replaced: str | None
    """One line when a grouping of this name with other settings was replaced."""
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Assignment:
    ids: list[pa.Array] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)  # per row: index into labels (source, cluster)
    units: list[np.ndarray] = field(default_factory=list)  # per row: index of its centroid (a summary row)
    sims: list[np.ndarray] = field(default_factory=list)  # per row: cosine to its centroid
    centroids: list[np.ndarray] = field(default_factory=list)


def prepare(req: ClusterRequest) -> ClusterPlan:
    """Check a request against the store, read-only; nothing is embedded or written.

    Raises:
        ConfigError: a flag is invalid (k, name, sources, target, --embed).
        DataError: the store is missing or unreadable.
        DependencyError: faiss or the embedder's package is not installed.
    """
    if req.k < 2:
        raise ConfigError(f"--k {req.k}: needs at least 2 clusters; pass --k 2 or more")
    name = req.name if req.name is not None else f"k{req.k}"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '_', '.' or '-' (starting with a letter or digit)")
    kmeans.require_faiss()
    spec = resolve_embed(req.embed, req.model)
    with open_db(req.db, read_only=True) as con:
        counts = _chosen_sources(con, req.sources)
        _check_k(counts, req.k, req.joint)
        where, args = _target_rows(con, req.target)
        n_target = int((con.execute(f"SELECT count(*) FROM examples WHERE {where}", args).fetchone() or [0])[0])
        settings = {"k": req.k, "sources": sorted(counts), "embed": spec.key, "joint": req.joint, "seed": req.seed,
                    "niter": kmeans.NITER, "max_chars": MAX_CHARS,
                    "fingerprint": data_fingerprint(con, sorted(counts))}
        previous = grouping_settings(con, name)
    return ClusterPlan(req, name, spec, counts, where, args, n_target, settings, previous)


def cluster(plan: ClusterPlan, on_chunk: Callable[[], None] | None = None) -> ClusterResult:
    """Embed, cluster and store the grouping; ``on_chunk`` is called after each embedded chunk.

    Raises:
        DataError: the chosen sources changed in the store while they were being embedded.
        Interrupted: Ctrl-C (the old grouping, if any, is kept).
    """
    start, req = time.monotonic(), plan.request
    try:
        with open_db(req.db, read_only=True) as con:
            embedder = build_embedder(plan.spec, con, sorted(plan.counts), req.seed)
            got = _fit(con, plan, embedder, on_chunk)
            target_units = _target_units(con, plan, embedder, got, on_chunk)
            groups = _summaries(con, plan, got, target_units)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or is_interrupt(e):
            raise Interrupted(f"nothing was written; grouping {plan.name!r} is as it was") from None
        raise
    _store(plan, got)
    return ClusterResult(plan.name, groups, sum(plan.counts.values()), plan.n_target, _replaced(plan),
                         time.monotonic() - start, plan.settings)


def _store(plan: ClusterPlan, got: _Assignment) -> None:
    sources, k, db = sorted(plan.counts), plan.request.k, plan.request.db
    labels = [f"{s}/{_cluster_name(j, k)}" for s in sources for j in range(k)]
    with open_db(db) as con:
        if data_fingerprint(con, sources) != plan.settings["fingerprint"]:
            raise DataError(f"{db}: the chosen sources changed while they were clustered (an ingest or drop); "
                            "run curate cluster again")
        write_grouping(con, plan.name, pa.concat_arrays(got.ids), pa.array(np.concatenate(got.codes)), labels,
                       plan.settings)


def _fit(con: duckdb.DuckDBPyConnection, plan: ClusterPlan, embedder: Embedder,
         on_chunk: Callable[[], None] | None) -> _Assignment:
    sources, k, seed = sorted(plan.counts), plan.request.k, plan.request.seed
    got = _Assignment()
    # per source: embed, fit and assign one source at a time, so only one source's embeddings are held
    batches = [sources] if plan.request.joint else [[s] for s in sources]
    for chosen in batches:
        ids, srcs, x = embed_rows(con, "split = 'train' AND source IN (SELECT unnest(?))", [chosen],
                                  sum(plan.counts[s] for s in chosen), embedder, on_chunk)
        x = kmeans.normalise(x)
        centroids = kmeans.fit_centroids(x, k, seed)
        cluster_of, sims = kmeans.nearest(x, centroids)
        src_index = pc.index_in(srcs, value_set=pa.array(sources)).to_numpy().astype(np.int32)
        offset = 0 if plan.request.joint else len(got.centroids) * k
        got.ids.append(ids)
        got.codes.append(src_index * k + cluster_of)
        got.units.append(cluster_of + offset)
        got.sims.append(sims)
        got.centroids.append(centroids)
    return got


def _target_units(con: duckdb.DuckDBPyConnection, plan: ClusterPlan, embedder: Embedder, got: _Assignment,
                  on_chunk: Callable[[], None] | None) -> np.ndarray | None:
    """The summary row of each target row's nearest centroid, over every source's centroids (None: no target)."""
    if plan.n_target == 0:
        return None
    _, _, tx = embed_rows(con, plan.target_where, plan.target_args, plan.n_target, embedder, on_chunk)
    units, _ = kmeans.nearest(kmeans.normalise(tx), np.concatenate(got.centroids))
    return units


def _summaries(con: duckdb.DuckDBPyConnection, plan: ClusterPlan, got: _Assignment,
               target_units: np.ndarray | None) -> list[GroupSummary]:
    sources, k = sorted(plan.counts), plan.request.k
    units, codes, sims = (np.concatenate(a) for a in (got.units, got.codes, got.sims))
    ids = pa.concat_arrays(got.ids)
    n_units = sum(len(c) for c in got.centroids)
    samples = _sample_prompts(con, ids, units, sims)
    share = None if target_units is None else np.bincount(target_units, minlength=n_units) / len(target_units)
    out = []
    for u in range(n_units):
        rows = units == u
        if not rows.any():
            continue
        per_source = np.bincount(codes[rows] // k, minlength=len(sources))
        label = _cluster_name(u, k) if plan.request.joint else f"{sources[u // k]}/{_cluster_name(u % k, k)}"
        out.append(GroupSummary(label, {s: int(n) for s, n in zip(sources, per_source, strict=True) if n},
                                int(rows.sum()), samples.get(u, []),
                                None if share is None else float(share[u])))
    return out


def _sample_prompts(con: duckdb.DuckDBPyConnection, ids: pa.Array, units: np.ndarray,
                    sims: np.ndarray) -> dict[int, list[str]]:
    """Each centroid's :data:`SAMPLES` nearest rows: their prompt (or text, for a row with no prompt)."""
    order = np.lexsort((-sims, units))  # by centroid, the most similar row first
    by_unit = units[order]
    first = np.r_[0, np.flatnonzero(by_unit[1:] != by_unit[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    picks = order[rank < SAMPLES]
    chosen = ids.take(pa.array(picks)).to_pylist()
    text = dict(con.execute("SELECT example_id, left(CASE WHEN prompt = '' THEN text ELSE prompt END, 300) "
                            "FROM examples WHERE example_id IN (SELECT unnest(?))", [chosen]).fetchall())
    out: dict[int, list[str]] = {}
    for i, eid in zip(picks, chosen, strict=True):
        out.setdefault(int(units[i]), []).append(text.get(eid) or "")
    return out


def _chosen_sources(con: duckdb.DuckDBPyConnection, spec: str) -> dict[str, int]:
    """Train rows per chosen source, sorted by name."""
    train = dict(con.execute("SELECT source, count(*) FROM examples WHERE split = 'train' GROUP BY 1").fetchall())
    if spec.strip() == "all":
        if not train:
            raise ConfigError("--sources all: the store has no train rows; ingest some with --split train first")
        return {s: int(train[s]) for s in sorted(train)}
    names = sorted({n.strip() for n in spec.split(",") if n.strip()})
    if not names:
        raise ConfigError(f"--sources {spec!r}: names no source; pass names separated by commas, or 'all'")
    known = {r[0] for r in con.execute("SELECT DISTINCT source FROM examples").fetchall()}
    for n in names:
        if n not in known:
            raise ConfigError(f"--sources: no source {n!r} in the store (it has {', '.join(sorted(known)) or 'none'})")
        if n not in train:
            raise ConfigError(f"--sources: {n!r} has no train rows to cluster; ingest some with --split train")
    return {n: int(train[n]) for n in names}


def _check_k(counts: dict[str, int], k: int, joint: bool) -> None:
    if joint and sum(counts.values()) < k:
        raise ConfigError(f"--k {k}: the chosen sources have only {sum(counts.values())} train rows together; "
                          f"pass --k {sum(counts.values())} or less")
    for s, n in counts.items():
        if not joint and n < k:
            also = ", or cluster jointly with --joint" if sum(counts.values()) >= k and len(counts) > 1 else ""
            raise ConfigError(f"--k {k}: source {s!r} has only {n} train rows; pass --k {n} or less, or leave it "
                              f"out with --sources{also}")


def _target_rows(con: duckdb.DuckDBPyConnection, target: str) -> tuple[str, list[Any]]:
    """``--target`` as in ``curate reweight``: a split (all its rows), or a source (its val rows, else all)."""
    if target in SPLIT_NAMES:
        return "split = ?", [target]
    row = con.execute("SELECT count(*), count(*) FILTER (WHERE split = 'val') FROM examples WHERE source = ?",
                      [target]).fetchone()
    if row is None or not row[0]:
        raise ConfigError(f"--target {target!r}: neither a split (train, val, test) nor a stored source")
    return ("source = ? AND split = 'val'", [target]) if row[1] else ("source = ?", [target])


def _cluster_name(j: int, k: int) -> str:
    return f"c{j:0{max(2, len(str(k - 1)))}d}"


def _replaced(plan: ClusterPlan) -> str | None:
    prev, new = plan.previous, plan.settings
    if prev is None or prev == new:
        return None
    changes = ["the data changed" if key == "fingerprint" else f"{key} {prev.get(key)!r} -> {new.get(key)!r}"
               for key in sorted(set(prev) | set(new)) if prev.get(key) != new.get(key)]
    return f"replaced grouping {plan.name!r}, made with other settings ({'; '.join(changes)})"
