import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals import harness
from evals.harness import generate_greedy, generation_accuracy, heldout_loss
from solvers.data import TokenizedSet, tokenize_rows

RESULT_KEYS = {"accuracy", "n", "n_correct", "n_unparsed", "rule", "template", "max_new_tokens", "decoding",
               "examples", "per_example", "outputs"}


def _manual_source_losses(model, data):
    """Per-source token-mean NLL computed one unpadded row at a time, independently of the batched path."""
    sums, counts = {}, {}
    model.eval()
    with torch.no_grad():
        for ids, labels, src in zip(data.input_ids, data.labels, data.source_ids, strict=True):
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            target = torch.tensor(labels[1:])
            keep = target != -100
            if keep.sum() == 0:
                continue
            nll = F.cross_entropy(logits[keep].double(), target[keep], reduction="sum").item()
            name = data.sources[src]
            sums[name] = sums.get(name, 0.0) + nll
            counts[name] = counts.get(name, 0) + int(keep.sum())
    return {k: sums[k] / counts[k] for k in sums}, sum(sums.values()) / sum(counts.values()), counts


def test_heldout_loss_matches_manual_per_source(copy_task, make_model):
    tok = copy_task["tok"]
    prompts = ["copy 1", "please copy 22", "copy 3", "hey you there please copy 4", "copy 5"]
    responses = ["#### 1", "#### 22 and more", "#### 3", "#### 4", "#### 5 5 5 5 5 5 5"]
    # source "c" has no rows; max_len 12 truncates the last response partly; long prompts vary the padding
    data = tokenize_rows(tok, prompts, responses, [0, 1, 0, 1, 1], ["a", "b", "c"], 12, template="plain")
    model = make_model(tok, seed=1)
    per_source, overall, counts = _manual_source_losses(model, data)
    model.train()
    out = heldout_loss(model, data, batch_size=2)
    assert model.training  # mode restored
    assert set(out["per_source"]) == {"a", "b"}
    for name in ("a", "b"):
        assert out["per_source"][name] == pytest.approx(per_source[name], rel=1e-5)
    assert out["loss"] == pytest.approx(overall, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(overall), rel=1e-5)
    assert out["per_source_tokens"] == counts
    # the per-row values average to the token-mean loss, so row-level statistics test the reported number
    assert len(out["per_example"]) == len(data)
    assert sum(out["per_example"]) / len(data) == pytest.approx(out["loss"], rel=1e-9)
    assert out["n_examples"] == 5 and out["n_tokens"] == sum(counts.values())
    assert heldout_loss(model, data, batch_size=5)["loss"] == pytest.approx(out["loss"], rel=1e-5)


def test_heldout_loss_ignores_rows_without_response_tokens(copy_task, make_model):
    tok = copy_task["tok"]
    prompts = ["copy 1", "hey you there please copy 4"]
    full = tokenize_rows(tok, prompts, ["#### 1", "#### 4"], [0, 1], ["a", "b"], 64, template="plain")
    # cut at the first row's length: the longer prompt of the second row leaves it no response tokens at all
    n = len(full.input_ids[0])
    cut = tokenize_rows(tok, prompts, ["#### 1", "#### 4"], [0, 1], ["a", "b"], n, template="plain",
                        truncation="right")
    assert len(cut) == 1 and cut.stats["b"].no_labels == 1  # left out at tokenization, and counted
    # a set built by hand that still holds such a row: the loss must not count it either
    data = TokenizedSet(full.input_ids[:1] + [full.input_ids[1][:n]], full.labels[:1] + [[-100] * n],
                        np.array([0, 1]), ["a", "b"], pad_id=full.pad_id)
    out = heldout_loss(make_model(tok), data, batch_size=2)
    assert set(out["per_source"]) == {"a"} and out["n_examples"] == 2
    assert out["loss"] == pytest.approx(out["per_source"]["a"])


def test_generation_accuracy_learns_the_copy_task(copy_task, make_model, trained_copy_model):
    """Calibrated on 10 seeds (0-9) of the task, init and batch order (``build_copy_task``/``train_copy_model``):
    untrained accuracy 0.0 on every seed (bar <= 0.1); last/first loss 0.0047 / 0.0074 / 0.0103 (bar < 0.5);
    trained accuracy 1.0 on every seed and rule (bar >= 0.9)."""
    tok, test = copy_task["tok"], copy_task["test"]
    untrained = generation_accuracy(make_model(tok), tok, test["prompts"], test["answers"], rule="gsm8k",
                                    template="plain", max_new_tokens=6, batch_size=16)
    assert untrained["accuracy"] <= 0.1
    model, history = trained_copy_model
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    for rule, answers in (("gsm8k", test["answers"]), ("last_number", test["answers"]),
                          ("exact", test["responses"])):
        res = generation_accuracy(model, tok, test["prompts"], answers, rule=rule, template="plain",
                                  max_new_tokens=6, batch_size=16)
        assert res["accuracy"] >= 0.9, (rule, res["examples"])
        assert set(res) == RESULT_KEYS and res["rule"] == rule and res["n"] == len(test["prompts"])
        assert sum(res["per_example"]) / res["n"] == res["accuracy"] and len(res["outputs"]) == res["n"]
    ex = res["examples"]
    assert len(ex) == harness.N_EXAMPLES
    assert set(ex[0]) == {"prompt", "gold", "pred", "output", "correct"}
    assert ex[0]["prompt"] == test["prompts"][0] and ex[0]["output"].startswith("####")


def test_batched_left_padded_generation_equals_one_by_one(copy_task, make_model):
    # a random model is maximally sensitive to a wrong attention mask or position ids under left padding
    tok = copy_task["tok"]
    prompts = copy_task["test"]["prompts"][:12]
    assert len({len(p) for p in prompts}) > 1
    model = make_model(tok, seed=3)
    assert generate_greedy(model, tok, prompts, "plain", 8, batch_size=12) == \
        generate_greedy(model, tok, prompts, "plain", 8, batch_size=1)


def test_generation_accuracy_rejects_bad_input(copy_task, make_model):
    tok = copy_task["tok"]
    model = make_model(tok)
    with pytest.raises(ValueError, match="prompts but"):
        generation_accuracy(model, tok, ["a", "b"], ["1"], rule="gsm8k")
    with pytest.raises(ValueError, match="unknown answer rule"):
        generation_accuracy(model, tok, ["a"], ["1"], rule="fuzzy")  # type: ignore[arg-type]
