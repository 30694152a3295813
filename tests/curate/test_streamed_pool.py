"""A streamed pool (memory-mapped snapshot, batches encoded as drawn) gives the in-memory path's answers.

With no label-less rows the two must agree exactly for every model-based method: the same rows in the same order,
the same tokenizer, the same batches. With label-less rows the streamed set steps over them as it meets them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.curate.test_methods_pipeline import ARGS, TINY

runner = CliRunner()
STEPS = {"scalebio": ["--steps", "12", "scalebio.batch_size=8", "scalebio.val_batch_size=8"]}


def _reweight(db, out, method, *extra):
    res = runner.invoke(app, ["reweight", "--method", method, "--db", str(db), "--out", str(out), "--quiet",
                              *TINY, *STEPS.get(method, []), *ARGS.get(method, []), *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "weights.json").read_text())


@pytest.mark.parametrize("method", ["scalebio", "doremi", "less", "rho"])
def test_streamed_pool_matches_in_memory(tmp_path, arith_db, method):
    eager = _reweight(arith_db, tmp_path / "eager", method)
    streamed = _reweight(arith_db, tmp_path / "streamed", method, "stream_above=0")
    assert streamed["sources"] == pytest.approx(eager["sources"], abs=1e-6)
    assert streamed["diagnostics"]["tokenization"].get("streamed") is True
    assert "streamed" not in eager["diagnostics"]["tokenization"]
    if method in ("less", "rho"):
        import pyarrow.parquet as pq

        a = pq.read_table(tmp_path / "eager" / "scores.parquet").to_pylist()
        b = pq.read_table(tmp_path / "streamed" / "scores.parquet").to_pylist()
        assert [r["example_id"] for r in a] == [r["example_id"] for r in b]
        assert [r["score"] for r in b] == pytest.approx([r["score"] for r in a], abs=1e-5)
    assert not list(arith_db.parent.glob(".curate-pool-*"))  # the snapshot is removed when the run ends


def test_sampler_steps_over_label_less_rows():
    from solvers.data import SourceSampler
    from solvers.lm import train_tokenizer
    from solvers.stream import StreamedSet

    prompts = [f"question {i} " + ("long " * 60 if i % 3 == 0 else "") for i in range(60)]
    responses = [f"answer {i}" for i in range(60)]
    tok = train_tokenizer(prompts + responses, 300)

    def fetch(idx):
        return [prompts[i] for i in idx], [responses[i] for i in idx]

    data = StreamedSet(fetch, np.arange(60) % 2, ["a", "b"], tok, max_len=24, template="plain", truncation="right")
    assert data.stats["all"].no_labels == 20  # every third row loses its response at 24 tokens
    sampler = SourceSampler(data, 8, seed=0)
    seen = [i for _ in range(30) for i in sampler.next_indices()]
    assert seen and all(i % 3 for i in seen)
    assert sorted(set(seen)) == [i for i in range(60) if i % 3]  # every usable row is still drawn
    usable = data.usable()
    assert len(usable) == 40 and usable.exact and usable.stats["a"].no_labels == 10
    assert usable.counts().tolist() == [20, 20]


def test_sampler_state_stays_small_and_resumes_exactly():
    """A sampler's state dict holds a generator state per source, not a permutation of every row (the pool's size
    in Python ints per checkpoint); resuming from it, or from the older form that saved the permutations, draws the
    same batches as an uninterrupted run, and the per-row arrays are int32."""
    from solvers.data import SourceSampler
    from solvers.lm import train_tokenizer
    from solvers.stream import StreamedSet

    prompts = [f"question {i}" for i in range(3_000)]
    tok = train_tokenizer(prompts + ["answer"], 300)
    data = StreamedSet(lambda idx: ([prompts[i] for i in idx], ["answer"] * len(idx)), np.arange(3_000) % 3,
                       ["a", "b", "c"], tok, max_len=24, template="plain")
    assert data.source_ids.dtype == np.int32 and data.index.dtype == np.int32
    run = SourceSampler(data, 8, seed=3)
    assert run.groups[0].dtype == np.int32
    for _ in range(150):
        run.next_indices()
    state = json.loads(json.dumps(run.state_dict()))
    assert "perms" not in state and len(json.dumps(state)) < 2_000
    old = {**{k: v for k, v in state.items() if k != "perm_states"}, "perms": [p.tolist() for p in run.perms]}
    ahead = [run.next_indices() for _ in range(400)]  # past the end of every source's first permutation
    for saved in (state, old):
        again = SourceSampler(data, 8, seed=3)
        again.load_state_dict(saved)
        assert [again.next_indices() for _ in range(400)] == ahead
    assert "perm_states" in again.state_dict()  # every permutation was drawn again since: small once more


def test_a_source_with_no_usable_row_is_refused():
    from solvers.data import SourceSampler
    from solvers.lm import train_tokenizer
    from solvers.stream import StreamedSet

    prompts = ["long " * 80 if i % 2 else "short" for i in range(20)]
    tok = train_tokenizer(prompts + ["x"], 300)
    data = StreamedSet(lambda idx: ([prompts[i] for i in idx], ["x"] * len(idx)), np.arange(20) % 2, ["a", "b"],
                       tok, max_len=40, template="plain", truncation="right")
    with pytest.raises(ValueError, match="source 'b': no row keeps a label token"):
        SourceSampler(data, 4, seed=0).next_indices()


def test_streamed_reweight_refuses_a_source_with_no_usable_row(tmp_path):
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "ok.jsonl", [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)])
    write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 200 + str(i), "response": "yes"} for i in range(20)])
    write_jsonl(tmp_path / "val.jsonl", [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(5)])
    db = tmp_path / "s.duckdb"
    for args in ([str(tmp_path / "ok.jsonl"), str(tmp_path / "long.jsonl")], [str(tmp_path / "val.jsonl"),
                                                                               "--split", "val"]):
        assert runner.invoke(app, ["ingest", *args, "--db", str(db), "--quiet"]).exit_code == 0
    res = runner.invoke(app, ["reweight", "--db", str(db), "--out", str(tmp_path / "run"), "--quiet", "--steps", "2",
                              "stream_above=0", "max_len=16", "truncation=right", "template=plain"])
    assert res.exit_code == 2, res.output
    assert "source 'long'" in res.output and "max_len" in res.output
    assert not list(tmp_path.glob(".curate-pool-*"))
