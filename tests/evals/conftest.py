"""Eval test fixtures: a trivially learnable "copy the digit" task and a tiny model trained on it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from solvers.data import tokenize_rows
from solvers.lm import tiny_llama, train_tokenizer
from solvers.sft import finetune

FILLERS = ("", "please ", "now please ", "hey you there please ")


@contextmanager
def one_thread() -> Iterator[None]:
    """Models here are tiny: a second thread buys nothing, and on a shared 2-core box it thrashes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def copy_rows(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Prompts "… copy 7", responses "#### 7", bare answers "7"; fillers vary the prompt length."""
    rng = random.Random(seed)
    digits = [str(rng.randrange(10)) for _ in range(n)]
    prompts = [f"{rng.choice(FILLERS)}copy {d}" for d in digits]
    return prompts, [f"#### {d}" for d in digits], digits


@pytest.fixture(scope="session")
def copy_task():
    prompts, responses, digits = copy_rows(240, seed=0)
    texts = [p + "\n### Response:\n" + r for p, r in zip(prompts, responses, strict=True)]
    tok = train_tokenizer(texts, vocab_size=300)
    train = tokenize_rows(tok, prompts[:200], responses[:200], [i % 2 for i in range(200)], ["a", "b"], 32,
                          template="plain")
    test = {"prompts": prompts[200:], "responses": responses[200:], "answers": digits[200:]}
    return {"tok": tok, "train": train, "test": test}


def _model(tok, seed: int = 0):
    return tiny_llama(len(tok), hidden=64, layers=2, heads=4, max_len=64, seed=seed)


@pytest.fixture(scope="session")
def make_model():
    """Factory for a fresh random-init tiny Llama sized for a tokenizer (tests must not share models)."""
    return _model


@pytest.fixture(scope="session")
def trained_copy_model(copy_task):
    with one_thread():
        model, history = finetune(_model(copy_task["tok"]), copy_task["train"], steps=120, lr=3e-3,
                                  batch_size=16, seed=0)
    return model, history
