"""Resample end to end on a stored corpus: proportions, provenance, manifest, determinism; the SQL draw against
the numpy resampler it replaced; parts, readers and atomic writes; the default epoch cap."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.corpus import read_parquet_rows
from curate.db import open_db
from curate.errors import DataError
from curate.ingest import ingest_paths
from curate.io import sha256_file
from curate.resample import COLUMNS, resample
from curate.runs import RunFolder
from curate.sampling import DEFAULT_MAX_EPOCHS


@pytest.fixture
def db(tmp_path, corpus):
    path = tmp_path / "c.duckdb"
    with open_db(path) as con:
        ingest_paths(con, [corpus])
    return path


def _weights(run, sources):
    run.mkdir(parents=True, exist_ok=True)
    (run / "weights.json").write_text(json.dumps({"method": "manual", "sources": sources}))
    return run


def test_resample_honours_weights_and_records_provenance(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=100, seed=3)
    table = pq.read_table(res.files[0])
    assert table.num_rows == 100
    counts = {s: table.column("source").to_pylist().count(s) for s in ("math", "chat", "code")}
    assert counts == {"math": 50, "chat": 30, "code": 20}
    code = [r for r in table.to_pylist() if r["source"] == "code"]
    assert sorted(r["draw"] for r in code) == [0] * 10 + [1] * 10  # 20 rows from 10: two whole passes
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["allocation"] == counts and manifest["seed"] == 3
    assert manifest["outputs"] == {"data/part-00000.parquet": sha256_file(res.files[0])}
    assert manifest["repeats"]["code"] == 2.0


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path, db):
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        run = _weights(tmp_path / f"r{i}", {"math": 0.6, "chat": 0.4, "code": 0.0})
        with open_db(db, read_only=True) as con:
            outs.append(pq.read_table(resample(con, run, budget=40, seed=seed).files[0]))
    assert outs[0].equals(outs[1])
    assert outs[0].column("example_id").to_pylist() != outs[2].column("example_id").to_pylist()


def test_weights_for_unknown_source_are_refused_and_nothing_written(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "nope": 0.5})
    with open_db(db, read_only=True) as con, pytest.raises(DataError, match="'nope' is not in the database"):
        resample(con, run, budget=10, seed=0)
    assert not (run / "data").exists()


def test_weights_not_summing_to_one_are_refused(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.2})
    with open_db(db, read_only=True) as con, pytest.raises(DataError, match="sum to 0.7"):
        resample(con, run, budget=10, seed=0)


# --- the SQL draw against the numpy resampler it replaced ---------------------------------------------------------


def _source_rng(seed: int, source: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def reference_draw(ids: dict[str, list[str]], allocation: dict[str, int], seed: int,
                   scores: dict[str, np.ndarray] | None = None) -> list[tuple[str, str, int]]:
    """The resampler before the SQL one (``curate.sampling.draw``), transcribed: a numpy permutation per whole pass,
    then a random remainder (best score first when scored), each source from its own seeded generator. Returns
    (source, example_id, draw) in its order."""
    out: list[tuple[str, str, int]] = []
    for source in sorted(allocation):
        k = allocation[source]
        if k == 0:
            continue
        pool = np.asarray(ids[source], dtype=object)
        n, rng = len(pool), _source_rng(seed, source)
        passes, rem = divmod(k, n)
        for p in range(passes):
            out += [(source, str(pool[i]), p) for i in rng.permutation(n)]
        if rem:
            if scores is not None and source in scores:
                chosen = np.lexsort((np.arange(n), -np.asarray(scores[source], dtype=np.float64)))[:rem]
            else:
                chosen = rng.choice(n, size=rem, replace=False)
            out += [(source, str(pool[i]), passes) for i in chosen]
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


def _stored_ids(db) -> dict[str, list[str]]:
    with open_db(db, read_only=True) as con:
        got = con.execute("SELECT source, list(example_id ORDER BY example_id) FROM examples WHERE split = 'train' "
                          "GROUP BY 1").fetchall()
    return {s: list(v) for s, v in got}


def _drawn(files) -> list[tuple[str, str, int]]:
    return [(r["source"], r["example_id"], r["draw"]) for f in files
            for r in pq.read_table(f, columns=["source", "example_id", "draw"]).to_pylist()]


def _by_source(rows):
    out: dict[str, list[tuple[str, int]]] = {}
    for s, e, d in rows:
        out.setdefault(s, []).append((e, d))
    return out


def test_same_counts_passes_and_repeats_as_the_reference_resampler(tmp_path, db):
    # math 65 of 30 (2 passes + 5), chat 39 of 20 (1 pass + 19), code 26 of 10 (2 passes + 6)
    weights, budget = {"math": 0.5, "chat": 0.3, "code": 0.2}, 130
    run = _weights(tmp_path / "run", weights)
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=budget, seed=11)
    ids = _stored_ids(db)
    new, old = _by_source(_drawn(res.files)), _by_source(reference_draw(ids, res.allocation, 11))
    assert res.allocation == {"math": 65, "chat": 39, "code": 26} and res.capped == {}
    for source, k in res.allocation.items():
        n, got, ref = len(ids[source]), new[source], old[source]
        assert len(got) == len(ref) == k
        assert Counter(d for _, d in got) == Counter(d for _, d in ref)  # the same passes, the same remainder size
        uses = Counter(e for e, _ in got)
        assert sorted(Counter(uses.values()).items()) == sorted(Counter(Counter(e for e, _ in ref).values()).items())
        assert max(uses.values()) <= math.ceil(k / n)
        for p in range(k // n):  # every whole pass uses every row exactly once
            assert sorted(e for e, d in got if d == p) == ids[source]
        last = [e for e, d in got if d == k // n]
        assert len(last) == len(set(last)) == k % n  # the remainder: distinct rows, one more use each


def test_whole_multiples_give_exactly_the_reference_rows(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=100, seed=4)  # math 50 of 30, chat 30 of 20, code 20 of 10
    ref = reference_draw(_stored_ids(db), res.allocation, 4)
    got = _drawn(res.files)
    assert Counter((s, e, d) for s, e, d in got if s == "code") == Counter((s, e, d) for s, e, d in ref if s == "code")


def test_scored_runs_draw_exactly_the_reference_rows(tmp_path, db):
    import pyarrow as pa

    ids = _stored_ids(db)
    rng = np.random.default_rng(5)
    scored = {s: v[: len(v) - 3] for s, v in ids.items()}  # three rows per source left unscored
    table = [(e, s, float(x)) for s, v in scored.items() for e, x in zip(v, rng.normal(size=len(v)), strict=True)]
    table.append((ids["math"][0], "math", float(rng.normal())))  # a duplicate id: the higher score counts
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    pq.write_table(pa.table({"example_id": [t[0] for t in table], "source": [t[1] for t in table],
                             "score": [t[2] for t in table]}), run / "scores.parquet")
    best: dict[str, float] = {}
    for e, _, x in table:
        best[e] = max(best.get(e, -np.inf), x)
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=130, seed=2)
    arrays = {s: np.asarray([best.get(e, -np.inf) for e in v]) for s, v in ids.items()}
    ref = reference_draw(ids, res.allocation, 2, arrays)
    assert Counter(_drawn(res.files)) == Counter(ref)
    assert json.loads((run / "manifest.json").read_text())["scored"] is True


def test_seeds_are_deterministic_independent_of_other_sources_and_differ(tmp_path, db):
    def draw(name, weights, budget, seed):
        run = _weights(tmp_path / name, weights)
        with open_db(db, read_only=True) as con:
            return resample(con, run, budget=budget, seed=seed).files

    a, b = draw("a", {"math": 0.5, "chat": 0.5}, 40, 1), draw("b", {"math": 0.5, "chat": 0.5}, 40, 1)
    assert [sha256_file(f) for f in a] == [sha256_file(f) for f in b]  # the same bytes, not just the same rows
    with_code = draw("c", {"math": 0.4, "chat": 0.4, "code": 0.2}, 50, 1)  # math and chat keep 20 rows each
    for source in ("math", "chat"):
        assert sorted(r for r in _drawn(a) if r[0] == source) == sorted(r for r in _drawn(with_code) if r[0] == source)
    other = draw("d", {"math": 0.5, "chat": 0.5}, 40, 2)
    assert {e for s, e, _ in _drawn(a) if s == "math"} != {e for s, e, _ in _drawn(other) if s == "math"}
    assert [e for _, e, _ in _drawn(a)] != [e for _, e, _ in _drawn(other)]


def test_output_order_interleaves_sources_by_the_seeded_key(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=100, seed=9)
        keys = [int(k) for (k,) in con.execute(
            "SELECT md5_number('order:9:' || example_id || ':' || draw) FROM read_parquet(?)",
            [[str(f) for f in res.files]]).fetchall()]
    assert keys == sorted(keys)
    sources = [s for s, _, _ in _drawn(res.files)]
    assert sources != sorted(sources)  # not grouped by source


# --- parts, readers, atomicity -----------------------------------------------------------------------------------


@pytest.fixture
def many_parts(monkeypatch, tmp_path, db):
    """A draw of 5,000 rows split over three parts (row groups of 2,048 rows, a part closed after each)."""
    import curate.resample as rs

    monkeypatch.setattr(rs, "PART_BYTES", 1)
    monkeypatch.setattr(rs, "ROW_GROUP_ROWS", 2048)
    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.3, "code": 0.2})
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=5000, seed=1, max_epochs=None)
    return run, res


def test_parts_are_numbered_in_row_order_and_all_recorded(many_parts):
    run, res = many_parts
    names = [p.name for p in res.files]
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in res.files] == [2048, 2048, 904]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["outputs"] == {f"data/{p.name}": sha256_file(p) for p in res.files}
    assert manifest["max_epochs"] is None and manifest["rows"] == 5000
    with open_db(":memory:") as con:
        keys = [int(k) for (k,) in con.execute(
            "SELECT md5_number('order:1:' || example_id || ':' || draw) FROM read_parquet(?)",
            [[str(p) for p in res.files]]).fetchall()]
    assert keys == sorted(keys)  # the row order runs on across the parts
    assert [p.name for p in RunFolder(run).data_files()] == names
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_the_data_folder_reads_lazily_with_datasets_polars_and_pyarrow(many_parts, tmp_path, monkeypatch):
    import datasets
    import polars as pl
    import pyarrow.dataset as pads

    run, res = many_parts
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset("parquet", data_dir=str(run / "data"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 5000 and ds.column_names == list(COLUMNS)
    lazy = pl.scan_parquet(run / "data" / "*.parquet")
    assert lazy.select(pl.len()).collect().item() == 5000
    assert lazy.group_by("source").len().collect().sort("source").rows() == sorted(res.allocation.items())
    assert pads.dataset(run / "data", format="parquet").count_rows() == 5000
    rows = read_parquet_rows(RunFolder(run).data_files())
    assert rows.example_ids == [e for _, e, _ in _drawn(res.files)]


def test_a_failing_copy_leaves_the_previous_draw(tmp_path, db, monkeypatch):
    import duckdb

    import curate.resample as rs

    run = _weights(tmp_path / "run", {"math": 0.5, "chat": 0.5})
    with open_db(db, read_only=True) as con:
        resample(con, run, budget=20, seed=0)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    monkeypatch.setattr(rs, "PART_BYTES", 1)
    monkeypatch.setattr(rs, "draw_query", lambda *a, **k: (
        "SELECT CASE WHEN i < 5000 THEN i ELSE error('boom') END AS i FROM range(10000) t(i)", {}))
    with open_db(db, read_only=True) as con, pytest.raises(duckdb.Error, match="boom"):
        resample(con, run, budget=20, seed=0)
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_default_cap_applies_in_the_library_and_is_recorded(tmp_path, db):
    run = _weights(tmp_path / "run", {"math": 0.2, "code": 0.8})  # code asks for 80 of its 10 rows
    with open_db(db, read_only=True) as con:
        res = resample(con, run, budget=100, seed=0)
    assert res.max_epochs == DEFAULT_MAX_EPOCHS and res.allocation == {"math": 60, "code": 40}
    assert res.capped["code"].cut == 40 and len(res.warnings) == 2
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["capped"] == {"code": {"wanted": 80, "allocated": 40, "available": 10, "cut": 40}}
    ids = [e for s, e, _ in _drawn(res.files) if s == "code"]
    assert set(Counter(ids).values()) == {4}


def test_exports_of_a_many_part_draw_stay_sharded(many_parts, tmp_path, monkeypatch):
    import datasets

    import curate.export.writers as writers
    from curate.export import export_run

    run, res = many_parts
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    order = [e for _, e, _ in _drawn(res.files)]
    out = export_run(run, tmp_path / "parquet", fmt="parquet")
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds["example_id"] == order
    monkeypatch.setattr(writers, "HF_SHARD_BYTES", 200_000)  # ~1.5 MB of rows: more shards than parts
    out = export_run(run, tmp_path / "hf", fmt="hf")
    arrow = sorted((out / "train").glob("data-*.arrow"))
    assert len(arrow) > 3
    assert datasets.load_from_disk(str(out))["train"]["example_id"] == order


def test_data_fingerprint_follows_every_change_to_the_rows_of_its_sources(tmp_path, corpus):
    """The fingerprint the manifest records comes from the ingest ledger (one small query at any pool size); it must
    still change whenever the stored rows of the fingerprinted sources do, and only then."""
    from curate.db import data_fingerprint
    from curate.ingest import drop
    from tests.conftest import alpaca_rows, write_jsonl

    path = tmp_path / "fp.duckdb"
    more = write_jsonl(tmp_path / "more.jsonl", alpaca_rows("more", 5))
    seen = []

    def fp(sources=("math",)):
        with open_db(path) as con:
            return data_fingerprint(con, list(sources))

    with open_db(path) as con:
        ingest_paths(con, [corpus])
    seen.append(fp())
    with open_db(path) as con:
        ingest_paths(con, [corpus])  # the same files again: a no-op
        ingest_paths(con, [more], source="chat")  # another source
    assert fp() == seen[-1]
    assert fp(["chat"]) != fp(["chat", "math"]) != fp([])
    with open_db(path) as con:
        ingest_paths(con, [more], source="math")  # new rows in math
    seen.append(fp())
    with open_db(path) as con:
        ingest_paths(con, [corpus / "math.jsonl"], max_chars=29)  # math.jsonl replaced: fewer rows kept
    seen.append(fp())
    with open_db(path) as con:
        drop(con, file=str(more))  # the rows `more` brought to math (and chat)
    seen.append(fp())
    with open_db(path) as con:
        drop(con, source="math")
    seen.append(fp())
    assert len(set(seen)) == len(seen), seen
    with open_db(path) as con:  # the same file with the same options again: the same rows, the same fingerprint
        ingest_paths(con, [corpus / "math.jsonl"])
    assert fp() == seen[0]
