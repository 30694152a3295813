"""evals.lmeval: ``--eval`` parsing, the missing-extra error, flattening lm-eval 0.4.13's output, and (slow) a
real offline lm-eval run on a local task over a tiny Llama."""

import importlib.machinery
import math
import random
import re
import sys
import types

import numpy as np
import pytest

from evals.lmeval import flatten_results, parse_eval_spec, run_lm_eval
from tests.lmeval_task import write_mc_task

# Captured from a real lm-eval 0.4.13 run (6 documents, tiny Llama): a group over a multiple-choice task and a
# two-filter generation task, plus a rolling-loglikelihood task. Sample records keep the fields flattening reads
# (the real ones also carry doc, target, arguments, resps, filtered_resps and hashes).
REAL_OUT = {
    "results": {
        "tiny_mc": {"name": "tiny_mc", "alias": "tiny_mc", "sample_len": 6, "acc,none": 0.3333333333333333,
                    "acc_stderr,none": 0.210818510677892, "acc_norm,none": 0.3333333333333333,
                    "acc_norm_stderr,none": 0.210818510677892},
        "tiny_gen": {"name": "tiny_gen", "alias": "tiny_gen", "sample_len": 6, "exact_match,strict-match": 0.0,
                     "exact_match_stderr,strict-match": 0.0, "exact_match,flexible-extract": 0.0,
                     "exact_match_stderr,flexible-extract": 0.0},
        "tiny_ppl": {"name": "tiny_ppl", "alias": "tiny_ppl", "sample_len": 6,
                     "word_perplexity,none": 2382.991979576045, "word_perplexity_stderr,none": "N/A",
                     "bits_per_byte,none": 4.314830146356577, "bits_per_byte_stderr,none": "N/A"},
        "tiny_suite": {"alias": "tiny_suite", "name": "tiny_suite", "sample_len": 12,
                       "acc,none": 0.3333333333333333, "acc_stderr,none": 0.21081851067789198,
                       "sample_count": {"acc,none": 6}},
    },
    "groups": {"tiny_suite": {"alias": "tiny_suite", "name": "tiny_suite", "sample_len": 12,
                              "acc,none": 0.3333333333333333, "acc_stderr,none": 0.21081851067789198,
                              "sample_count": {"acc,none": 6}}},
    "higher_is_better": {"tiny_gen": {"exact_match": True}, "tiny_mc": {"acc": True, "acc_norm": True},
                         "tiny_ppl": {"word_perplexity": False, "bits_per_byte": False},
                         "tiny_suite": {"acc": True, "acc_norm": True, "exact_match": True}},
    "group_subtasks": {"tiny_suite": ["tiny_mc", "tiny_gen"]},
    "samples": {
        "tiny_mc": [{"doc_id": i, "filter": "none", "metrics": ["acc", "acc_norm"], "acc": a, "acc_norm": n}
                    for i, (a, n) in enumerate([(1.0, 1.0), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.0, 0.0),
                                                (0.0, 0.0)])],
        "tiny_gen": [{"doc_id": i, "filter": f, "metrics": ["exact_match"], "exact_match": np.float64(0.0)}
                     for f in ("strict-match", "flexible-extract") for i in range(6)],
        "tiny_ppl": [{"doc_id": i, "filter": "none", "metrics": ["word_perplexity", "bits_per_byte"],
                      "word_perplexity": (ll, 5), "bits_per_byte": (ll, 13)}
                     for i, ll in enumerate([-38.68, -38.87, -39.05, -38.95, -38.95, -38.78])],
    },
}


@pytest.mark.parametrize("spec, tasks", [
    ("lm-eval:hellaswag", ["hellaswag"]),
    ("lm-eval:arc_easy,hellaswag", ["arc_easy", "hellaswag"]),
    ("lm-eval: arc_easy , mmlu_anatomy ", ["arc_easy", "mmlu_anatomy"]),
    ("lm-eval:a,b,a", ["a", "b"]),
])
def test_parse_eval_spec(spec, tasks):
    assert parse_eval_spec(spec) == tasks


@pytest.mark.parametrize("spec", ["", "hellaswag", "lm-eval:", "lm-eval:a,,b", "lm_eval:a", "LM-EVAL:a",
                                  "lm-eval:a,"])
def test_parse_eval_spec_rejects(spec):
    with pytest.raises(ValueError, match=r"^--eval: expected lm-eval:TASK\[,TASK\.\.\.\]") as err:
        parse_eval_spec(spec)
    assert "\n" not in str(err.value)


def test_missing_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=re.escape("pip install 'curate[lmeval]'")):
        run_lm_eval("some/dir", ["hellaswag"])


def test_flatten_real_results():
    flat = flatten_results(REAL_OUT)
    assert flat["metrics"] == {
        "tiny_mc/acc": 0.3333333333333333, "tiny_mc/acc_norm": 0.3333333333333333,
        "tiny_gen/exact_match/strict-match": 0.0, "tiny_gen/exact_match/flexible-extract": 0.0,
        "tiny_ppl/word_perplexity": 2382.991979576045, "tiny_ppl/bits_per_byte": 4.314830146356577,
        "tiny_suite/acc": 0.3333333333333333,
    }
    assert flat["stderr"] == {  # "N/A" left out
        "tiny_mc/acc": 0.210818510677892, "tiny_mc/acc_norm": 0.210818510677892,
        "tiny_gen/exact_match/strict-match": 0.0, "tiny_gen/exact_match/flexible-extract": 0.0,
        "tiny_suite/acc": 0.21081851067789198,
    }
    assert flat["higher_is_better"] == {name: not name.startswith("tiny_ppl") for name in flat["metrics"]}
    assert flat["samples"] == {  # perplexities' per-document (loglikelihood, words) pairs left out
        "tiny_mc/acc": [1.0, 0.0, 0.0, 1.0, 0.0, 0.0], "tiny_mc/acc_norm": [1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        "tiny_gen/exact_match/strict-match": [0.0] * 6, "tiny_gen/exact_match/flexible-extract": [0.0] * 6,
    }
    assert all(type(v) is float for v in [*flat["metrics"].values(), *flat["samples"]["tiny_gen/exact_match/"
                                                                                      "strict-match"]])
    assert flat["metrics"]["tiny_mc/acc"] == pytest.approx(np.mean(flat["samples"]["tiny_mc/acc"]))


def test_flatten_puts_samples_in_document_order():
    # several processes concatenate their shards (rank 0 has docs 0, 2, 4, ...), so order is by doc_id
    docs = REAL_OUT["samples"]["tiny_mc"]
    flat = flatten_results({"results": {}, "samples": {"tiny_mc": docs[::2] + docs[1::2]}})
    assert flat["samples"]["tiny_mc/acc"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert "samples" not in flatten_results({"results": REAL_OUT["results"]})


def test_run_lm_eval_plumbing_with_a_fake_module(monkeypatch, tmp_path):
    """What reaches lm-eval, without lm-eval installed (CI has no extra)."""
    calls: dict = {}

    class TaskManager:
        def __init__(self, include_path=None, metadata=None):
            calls["manager"] = {"include_path": include_path, "metadata": metadata}
            self.all_tasks = ["gsm8k", "mine"]

    def simple_evaluate(**kwargs):
        calls.update(kwargs)
        return {"results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25}}}

    fake = types.ModuleType("lm_eval")
    fake.__spec__ = importlib.machinery.ModuleSpec("lm_eval", None)
    fake.__version__ = "0.4.13"
    fake.simple_evaluate = simple_evaluate
    fake_tasks = types.ModuleType("lm_eval.tasks")
    fake_tasks.TaskManager = TaskManager
    monkeypatch.setitem(sys.modules, "lm_eval", fake)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", fake_tasks)
    out = run_lm_eval("/models/x,y", ["gsm8k", "mine"], include_path=tmp_path, limit=10, num_fewshot=5)
    assert out["metrics"] == {"gsm8k/exact_match/strict-match": 0.25}
    assert out["config"]["limit"] == 10 and out["config"]["include_path"] == str(tmp_path)
    assert out["config"]["lm_eval_version"] == "0.4.13"
    assert calls["model"] == "hf" and calls["model_args"] == {"pretrained": "/models/x,y", "dtype": "auto"}
    assert calls["tasks"] == ["gsm8k", "mine"] and calls["num_fewshot"] == 5 and calls["log_samples"] is False
    assert calls["manager"]["include_path"] == str(tmp_path)
    with pytest.raises(ValueError, match="include path .* is not a folder"):
        run_lm_eval("/models/x", ["gsm8k"], include_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="does not know task"):
        run_lm_eval("/models/x", ["gsm8k", "nope"])


# --------------------------------------------------------------------------- real lm-eval, offline (slow)

N_ROWS = 20


def _rows() -> list[dict]:
    """Questions with three answers of 1, 2 and 3 digits in a random order and a random gold label."""
    rng = random.Random(0)
    rows = []
    for i in range(N_ROWS):
        choices = [str(rng.randrange(1, 10)) * k for k in (1, 2, 3)]
        rng.shuffle(choices)
        rows.append({"question": f"Question {i}: which number?", "choices": choices, "label": rng.randrange(3)})
    return rows


def _write_task(folder, rows) -> None:
    write_mc_task(folder, "tiny_mc", rows, metrics=("acc", "acc_norm"))


def _save_uniform_model(folder, rows, seed: int = 0):
    """A tiny Llama whose output layer is zero: every token gets log-probability -log(V), so an answer's
    loglikelihood is -(its token count) * log(V) and lm-eval's choice per document is known exactly."""
    from curate.modeling import save_pretrained
    from solvers.lm import tiny_llama, train_tokenizer

    texts = [r["question"] + " " + c for r in rows for c in r["choices"]]
    tok = train_tokenizer(texts, vocab_size=300)  # digits one token each, so 1 < 2 < 3 digits in tokens
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2, max_len=64, seed=seed)
    model.lm_head.weight.data.zero_()
    return save_pretrained(folder / "model", model, tok)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets_config = pytest.importorskip("datasets.config")
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")  # keep ~/.cache clean


@pytest.mark.slow
def test_real_lm_eval_on_a_local_task(tmp_path, offline):
    pytest.importorskip("lm_eval")
    rows = _rows()
    _write_task(tmp_path, rows)
    model_dir = _save_uniform_model(tmp_path, rows)
    out = run_lm_eval(model_dir, ["tiny_mc"], include_path=tmp_path, limit=None, log_samples=True)
    # acc takes the highest loglikelihood (the shortest answer); acc_norm divides it by the answer's length in
    # characters, -(1 + n) / n * log(V), which the longest answer maximises
    shortest = [float(r["label"] == min(range(3), key=lambda k: len(r["choices"][k]))) for r in rows]
    longest = [float(r["label"] == max(range(3), key=lambda k: len(r["choices"][k]))) for r in rows]
    assert out["samples"]["tiny_mc/acc"] == shortest and out["samples"]["tiny_mc/acc_norm"] == longest
    for metric, per_doc in (("tiny_mc/acc", shortest), ("tiny_mc/acc_norm", longest)):
        assert 0.0 <= out["metrics"][metric] <= 1.0
        assert out["metrics"][metric] == pytest.approx(float(np.mean(per_doc)))
        p = out["metrics"][metric]
        assert out["stderr"][metric] == pytest.approx(math.sqrt(p * (1 - p) / (N_ROWS - 1)))
        assert out["higher_is_better"][metric] is True
    assert 0 < sum(shortest) < N_ROWS  # the data gives neither metric a trivial score
    assert out["config"]["lm_eval_version"] == "0.4.13" and out["config"]["include_path"] == str(tmp_path)


@pytest.mark.slow
def test_real_lm_eval_unknown_task(tmp_path, offline):
    pytest.importorskip("lm_eval")
    _write_task(tmp_path, _rows())
    # the model folder does not exist: the task check comes before lm-eval loads anything
    with pytest.raises(ValueError) as err:
        run_lm_eval(tmp_path / "no_model", ["tiny_mc", "tiny_mcq"], include_path=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "tiny_mcq" in msg and str(tmp_path) in msg and "lm-eval ls tasks" in msg
    assert "task(s) tiny_mcq (" in msg  # the known task is not blamed
