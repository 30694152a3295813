"""Truncation keeps what is learned from, and rows without label tokens never enter a mean (issue "Every row
counts")."""

from __future__ import annotations

import pytest
import torch

from solvers.data import tokenize_rows
from solvers.lm import IGNORE, PLAIN_PROMPT, encode_example, label_rows, per_example_loss, prompt_ids, tiny_llama
from solvers.scalebio.objective import source_means


class CharTokenizer:
    """One token per character (ids 2..), ``<pad>`` 0 and ``<eos>`` 1: lengths are known exactly."""

    pad_token_id, eos_token_id, chat_template = 0, 1, None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + (ord(c) % 200) for c in text]

    def __len__(self) -> int:
        return 202


class ChatCharTokenizer(CharTokenizer):
    """The same, with a chat template whose role markers are single special tokens."""

    chat_template = "chatml"
    specials = {"<|user|>": 250, "<|assistant|>": 251, "<|end|>": 252}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out: list[int] = []
        while text:
            hit = next((s for s in self.specials if text.startswith(s)), None)
            if hit:
                out.append(self.specials[hit])
                text = text[len(hit):]
            else:
                out.append(2 + (ord(text[0]) % 200))
                text = text[1:]
        return out

    def apply_chat_template(self, msgs: list[dict], tokenize: bool = True, add_generation_prompt: bool = False):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in msgs)
        if add_generation_prompt:
            text += "<|assistant|>"
        return self.encode(text) if tokenize else text

    def __len__(self) -> int:
        return 253


TOK = CharTokenizer()
SUFFIX = PLAIN_PROMPT.partition("{prompt}")[2]


def _label_ids(enc) -> list[int]:
    return [t for t in enc.labels if t != IGNORE]


def test_keep_response_cuts_the_prompt_start_and_keeps_template_and_response() -> None:
    prompt, response = "x" * 100 + "QUESTION", "answer"
    enc = encode_example(TOK, prompt, response, 40, "plain")
    assert len(enc.ids) == 40 and enc.truncated and enc.length == 100 + 8 + len(SUFFIX) + 6 + 1
    assert _label_ids(enc) == TOK.encode(response) + [TOK.eos_token_id]  # whole response, eos included
    head = enc.ids[: len(enc.ids) - 7]
    assert head[-len(SUFFIX):] == TOK.encode(SUFFIX)  # the template's response marker is intact
    assert head[: -len(SUFFIX)][-8:] == TOK.encode("QUESTION")  # the prompt's end, next to the response, stays


def test_right_truncation_loses_the_response() -> None:
    enc = encode_example(TOK, "x" * 100, "answer", 40, "plain", truncation="right")
    assert len(enc.ids) == 40 and enc.n_labels == 0


def test_a_response_too_long_alone_is_cut_from_its_end_keeping_a_prompt_tail() -> None:
    enc = encode_example(TOK, "q" * 30, "r" * 200, 64, "plain")
    assert len(enc.ids) == 64
    room = 64 - len(SUFFIX)
    kept_prompt = enc.ids[: enc.labels.index(next(t for t in enc.labels if t != IGNORE))]
    assert len(kept_prompt) == room // 4 + len(SUFFIX)
    assert _label_ids(enc) == TOK.encode("r" * (64 - len(kept_prompt)))


def test_chat_template_role_tokens_survive_truncation() -> None:
    tok = ChatCharTokenizer()
    enc = encode_example(tok, "p" * 80 + "END", "yes", 20, "auto")
    assert len(enc.ids) == 20
    assert enc.ids[0] == tok.specials["<|user|>"]
    assert tok.specials["<|assistant|>"] in enc.ids and enc.ids.count(tok.specials["<|end|>"]) == 2
    assert _label_ids(enc)[:3] == tok.encode("yes")


def test_an_example_that_fits_is_unchanged() -> None:
    for mode in ("keep_response", "right"):
        enc = encode_example(TOK, "2+2=", "4", 64, "plain", truncation=mode)
        assert not enc.truncated and enc.ids == TOK.encode("2+2=" + SUFFIX) + TOK.encode("4") + [1]


def test_generation_prefix_is_cut_like_training() -> None:
    ids = prompt_ids(TOK, "x" * 100 + "QUESTION", "plain", max_len=30)
    assert len(ids) == 30 and ids[-len(SUFFIX):] == TOK.encode(SUFFIX)
    assert ids[-len(SUFFIX) - 8: -len(SUFFIX)] == TOK.encode("QUESTION")
    assert prompt_ids(TOK, "short", "plain", max_len=30) == TOK.encode("short" + SUFFIX)


def test_rows_without_labels_are_dropped_and_counted() -> None:
    prompts = ["a", "b" * 100, "c", "d" * 100]
    data = tokenize_rows(TOK, prompts, ["1", "2", "3", "4"], [0, 0, 1, 1], ["s0", "s1"], 32, "plain",
                         ["e0", "e1", "e2", "e3"], truncation="right")
    assert len(data) == 2 and data.example_ids == ["e0", "e2"] and data.counts().tolist() == [1, 1]
    assert data.stats["s0"].rows == 2 and data.stats["s0"].no_labels == 1 and data.stats["s0"].truncated == 1
    assert data.stats["all"].no_labels == 2 and data.stats["all"].usable == 2


def test_source_means_ignores_rows_without_labels() -> None:
    losses = torch.tensor([2.0, 0.0, 4.0, 3.0])
    ids = torch.tensor([0, 0, 1, 1])
    has = torch.tensor([True, False, True, True])
    assert source_means(losses, ids, 2, has).tolist() == [2.0, 3.5]
    assert source_means(losses, ids, 2).tolist() == [1.0, 3.5]  # the biased estimator, for contrast


def test_a_twin_source_that_loses_labels_gets_the_same_mean_loss() -> None:
    """Source B holds every example of A, plus the same examples again with prompts padded beyond max_len.
    Under right truncation the padded copies keep no label token; B's per-source mean over a fixed model must
    equal A's exactly (counting those rows as loss 0 would halve it)."""
    torch.manual_seed(0)
    prompts = [f"{a}+{b}=" for a in range(6) for b in range(4)]
    answers = [str(int(p[0]) + int(p[2])) for p in prompts]
    pad = ["#" * 80 + p for p in prompts]
    data = tokenize_rows(TOK, prompts + prompts + pad, answers * 3, [0] * 24 + [1] * 48, ["a", "b"], 32,
                         "plain", truncation="right")
    assert data.stats["b"].no_labels == 24
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, max_len=32, seed=0).eval()
    batch = data.batch(range(len(data)))
    with torch.no_grad():
        means = source_means(per_example_loss(model, batch), batch["source_ids"], 2, label_rows(batch))
    assert means[0].item() == pytest.approx(means[1].item(), rel=1e-6)


def test_scalebio_gives_a_long_prompt_twin_about_the_weight_of_its_original(arithmetic_tokenizer,
                                                                             arithmetic_rows) -> None:
    """Planted two-source problem: ``twin`` holds ``a``'s 200 additions with a 40-token preamble before each
    prompt, beyond ``max_len`` 32; the target is clean additions. With the default truncation the twin keeps its
    responses and gets about the weight of its original.

    Calibrated at ScaleBiOConfig defaults (300 steps), 6 seeds: twin weight min 0.389 / median 0.457 / max
    0.473. The code before this fix (right truncation, label-less rows counted as loss 0, so the twin's loss gap
    is exactly 0 and λ drifts wherever a's gap sends it) gave 0.200 and 0.514 on seeds 0 and 1: erratic, and
    outside the band on the seed this test runs. The exact check is the twin-mean test above.
    """
    from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

    seed = 0
    p, r = arithmetic_rows(200, seed=100 * seed)
    vp, vr = arithmetic_rows(64, seed=100 * seed + 99)
    preamble = "What is 10 + 10? " * 4
    train = tokenize_rows(arithmetic_tokenizer, p + [preamble + x for x in p], r + r, [0] * 200 + [1] * 200,
                          ["a", "twin"], 32, "plain")
    assert train.stats["twin"].truncated == 200 and train.stats["twin"].no_labels == 0
    val = tokenize_rows(arithmetic_tokenizer, vp, vr, [0] * 64, ["target"], 32, "plain")
    cfg = ScaleBiOConfig(batch_size=16, val_batch_size=32, seed=seed)
    model = tiny_llama(len(arithmetic_tokenizer), hidden=48, layers=2, heads=2, max_len=32, seed=seed)
    weights = fit(model, *make_samplers(train, val, cfg), cfg).weights
    assert 0.3 < weights["twin"] < 0.7, weights
