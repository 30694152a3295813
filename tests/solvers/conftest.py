"""Shared fixtures for the solver tests: offline hub, a tiny arithmetic corpus and tokenizer (the seeds and the
one torch thread come from tests/conftest.py)."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_arithmetic_rows(n: int, seed: int, noise: float = 0.0,
                         corrupt: str = ".") -> tuple[list[str], list[str]]:
    """``n`` prompts "What is a + b?" with the true sum as response, a ``noise`` fraction replaced by
    ``corrupt``."""
    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(n):
        a, b = rng.randrange(10, 50), rng.randrange(10, 50)
        prompts.append(f"What is {a} + {b}?")
        responses.append(corrupt if rng.random() < noise else str(a + b))
    return prompts, responses


@pytest.fixture(scope="session")
def arithmetic_rows():
    """The row generator :func:`make_arithmetic_rows`, as a fixture so test modules need not import
    conftest."""
    return make_arithmetic_rows


@pytest.fixture(scope="session")
def arithmetic_tokenizer(seeded):
    from solvers.lm import train_tokenizer

    with seeded(123):
        prompts, responses = make_arithmetic_rows(400, seed=123)
        texts = [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)] + ["."]
        return train_tokenizer(texts, vocab_size=300)


def small_sets(tokenizer, arithmetic_rows, sources: list[str]):
    """A small pool (12 additions per source, source k with noise 0.5·k) and an 8-row clean target, tokenized."""
    from solvers.data import tokenize_rows

    prompts, responses, ids = [], [], []
    for k in range(len(sources)):
        p, r = arithmetic_rows(12, seed=k, noise=0.5 * k)
        prompts, responses, ids = prompts + p, responses + r, ids + [k] * len(p)
    train = tokenize_rows(tokenizer, prompts, responses, ids, sources, 32, "plain")
    vp, vr = arithmetic_rows(8, seed=9)
    val = tokenize_rows(tokenizer, vp, vr, [0] * len(vp), ["target"], 32, "plain")
    return train, val
