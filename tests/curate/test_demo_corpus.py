"""The demo's corpus: deterministic, planted sources as described, held-out target rows never in the pool."""

from __future__ import annotations

import json

from curate.demo import SOURCES, build_corpus


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_corpus_is_deterministic_and_target_is_held_out(tmp_path):
    a = build_corpus(tmp_path / "a", n_val=20, n_test=30)
    b = build_corpus(tmp_path / "b", n_val=20, n_test=30)
    assert {k: p.read_bytes() for k, p in a.items()} == {k: p.read_bytes() for k, p in b.items()}
    pool = {r["instruction"] for name in SOURCES for r in _read(a[name])}
    val, test = _read(a["target_val"]), _read(a["target_test"])
    assert len(val) == 20 and len(test) == 30
    assert not pool & {r["instruction"] for r in val + test}
    assert not {r["instruction"] for r in val} & {r["instruction"] for r in test}


def test_planted_sources_are_what_they_claim(tmp_path):
    files = build_corpus(tmp_path, n_val=5, n_test=5)

    def correct(row):
        a, b = row["instruction"].removeprefix("Calculate ").rstrip(".").split(" + ")
        return int(a) + int(b) == int(row["output"])

    assert all(correct(r) for r in _read(files["arith"]))
    assert all(r["output"] == "." for r in _read(files["arith_corrupt"]))
    assert all(correct(r) for r in _read(files["target_test"]))
