"""Eval test fixtures: a trivially learnable "copy the digit" task and a tiny model trained on it."""

from __future__ import annotations

import random

import pytest

from solvers.data import tokenize_rows
from solvers.lm import tiny_llama, train_tokenizer
from solvers.sft import finetune

FILLERS = ("", "please ", "now please ", "hey you there please ")
COPY_SEED = 0  # the copy task's rows, the trained model's init and its batch order


def copy_rows(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Prompts "… copy 7", responses "#### 7", bare answers "7"; fillers vary the prompt length."""
    rng = random.Random(seed)
    digits = [str(rng.randrange(10)) for _ in range(n)]
    prompts = [f"{rng.choice(FILLERS)}copy {d}" for d in digits]
    return prompts, [f"#### {d}" for d in digits], digits


def build_copy_task(seed: int = COPY_SEED) -> dict:
    """240 copy rows for ``seed``: a tokenizer trained on them, 200 training rows, 40 held-out test rows."""
    prompts, responses, digits = copy_rows(240, seed=seed)
    texts = [p + "\n### Response:\n" + r for p, r in zip(prompts, responses, strict=True)]
    tok = train_tokenizer(texts, vocab_size=300)
    train = tokenize_rows(tok, prompts[:200], responses[:200], [i % 2 for i in range(200)], ["a", "b"], 32,
                          template="plain")
    test = {"prompts": prompts[200:], "responses": responses[200:], "answers": digits[200:]}
    return {"tok": tok, "train": train, "test": test}


@pytest.fixture(scope="session")
def copy_task(seeded):
    with seeded(COPY_SEED):
        return build_copy_task(COPY_SEED)


def _model(tok, seed: int = 0):
    return tiny_llama(len(tok), hidden=64, layers=2, heads=4, max_len=64, seed=seed)


@pytest.fixture(scope="session")
def make_model():
    """Factory for a fresh random-init tiny Llama sized for a tokenizer (tests must not share models)."""
    return _model


def train_copy_model(task: dict, seed: int = COPY_SEED):
    """A tiny Llama (init ``seed``) fine-tuned on the copy task for 120 steps (batch order ``seed``)."""
    return finetune(_model(task["tok"], seed), task["train"], steps=120, lr=3e-3, batch_size=16, seed=seed)


@pytest.fixture(scope="session")
def trained_copy_model(copy_task, seeded):
    with seeded(COPY_SEED):
        return train_copy_model(copy_task, COPY_SEED)
