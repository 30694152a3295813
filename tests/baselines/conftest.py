"""Fixtures for the baseline tests: a planted-noise arithmetic corpus, a tiny Llama, and the methods' results.

Three sources of "What is a + b?" -> "a+b" with 0, 50 and 100% of answers corrupted (half replaced by
".", half by a random 3-digit number), a clean target set, and a disjoint clean set the base model is briefly
pre-trained on (30 steps: LESS needs a model whose gradients mean something, RHO needs a base that has not yet
learned the target). Wrong answers are 3-digit while true sums are 2-digit, so a tiny model that cannot add
can still perceive the noise; that is what a CPU-sized test can check.

Signal strength, measured over seeds (the margins at the final size are in the tests' docstrings):
- With five sources (0, 25, 50, 75, 100%), 40 rows each, 40 target rows and DoReMi batches of 20, DoReMi's
  domain ranking (test_doremi) was wrong on 4 of 10 seeds and RHO's AUROC went down to 0.794. With 120 rows and
  batches of 60 it was still wrong on 1 of 19 (DoReMi's excess of adjacent 25%-apart levels differs by ~0.03,
  and the DRO loop itself narrows the gap between the top two domains) and LESS's AUROC reached 0.802.
- Hence a larger gap (three sources, 50% apart), 160 rows per source, 120 target rows (RHO's reference and
  LESS's target gradient are fitted on them: with 40, RHO's AUROC went down to 0.715) and DoReMi batches of 60.
- LESS warms its adapters up on 128 pool rows (``warmup_min_rows``): on the default 32 (5 % of this pool, 16
  steps) its AUROC fell to 0.71-0.81 on 3 of 16 seeds; proj_dim 2048 instead of 512 changed nothing.

Every fixture runs under ``seeded(FIXTURE_SEED)`` and one torch thread, and passes the same seed to the data,
the model and each method, so ``build_planted``/``train_base``/``run_methods`` with another seed are the
calibration runs the docstrings quote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from baselines import DoremiConfig, LessConfig, MethodResult, RhoConfig, run
from baselines.scoring import fit_reference
from solvers.data import TokenizedSet, tokenize_rows
from solvers.lm import tiny_llama, train_tokenizer

NOISE_RATES = (0.0, 0.5, 1.0)
SOURCES = [f"noise_{int(r * 100):03d}" for r in NOISE_RATES]
MAX_LEN = 64
N_PER_SOURCE = 160
N_TARGET = 120
FIXTURE_SEED = 0


@dataclass
class Planted:
    train: TokenizedSet
    target: TokenizedSet
    pretrain: TokenizedSet
    clean: dict[str, bool]  # example id -> answer is correct
    counts: dict[str, int]
    tokenizer: object


def _problems(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    pairs = rng.integers(10, 50, size=(n, 2))
    return [f"What is {a} + {b}?" for a, b in pairs], [str(a + b) for a, b in pairs]


def build_planted(n_per_source: int = N_PER_SOURCE, n_target: int = N_TARGET, seed: int = FIXTURE_SEED) -> Planted:
    """The planted-noise corpus described in the module docstring, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    prompts, answers, source_ids, ids, clean = [], [], [], [], {}
    for s, rate in enumerate(NOISE_RATES):
        p, a = _problems(rng, n_per_source)
        bad = set(rng.choice(n_per_source, int(round(rate * n_per_source)), replace=False).tolist())
        for j in range(n_per_source):
            ok = j not in bad
            answer = a[j] if ok else ("." if j % 2 == 0 else str(rng.integers(100, 1000)))
            prompts.append(p[j])
            answers.append(answer)
            source_ids.append(s)
            ids.append(f"{SOURCES[s]}/{j}")
            clean[ids[-1]] = ok
    target_p, target_a = _problems(rng, n_target)
    pre_p, pre_a = _problems(rng, 200)
    tok = train_tokenizer(prompts + answers + target_p + target_a, vocab_size=300)
    train = tokenize_rows(tok, prompts, answers, source_ids, SOURCES, MAX_LEN, "plain", ids)
    target = tokenize_rows(tok, target_p, target_a, [0] * n_target, ["target"], MAX_LEN, "plain")
    pretrain = tokenize_rows(tok, pre_p, pre_a, [0] * len(pre_p), ["pretrain"], MAX_LEN, "plain")
    counts = {name: int(c) for name, c in zip(SOURCES, train.counts(), strict=True)}
    return Planted(train, target, pretrain, clean, counts, tok)


def rank_auroc(scores: list[float], positive: list[bool]) -> float:
    """Rank-based AUROC (Mann–Whitney U / n1 n0) with average ranks for ties."""
    s = np.asarray(scores, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.fixture(scope="session")
def auroc():
    """The rank-based AUROC function (a fixture, so test modules need not import conftest)."""
    return rank_auroc


def train_base(planted: Planted, seed: int = FIXTURE_SEED) -> torch.nn.Module:
    """The base model: a tiny Llama (init ``seed``) pre-trained 30 steps on the planted corpus's clean set."""
    model = tiny_llama(len(planted.tokenizer), hidden=64, layers=2, heads=4, max_len=MAX_LEN, seed=seed)
    return fit_reference(model, planted.pretrain, steps=30, lr=3e-3, batch_size=16, seed=seed)


@pytest.fixture(scope="session")
def planted(seeded) -> Planted:
    with seeded(FIXTURE_SEED):
        return build_planted(seed=FIXTURE_SEED)


@pytest.fixture(scope="session")
def base_model(planted: Planted, seeded) -> torch.nn.Module:
    with seeded(FIXTURE_SEED):
        return train_base(planted, FIXTURE_SEED)


LESS_CFG = LessConfig(
    lr=1e-2, warmup_epochs=4, warmup_min_rows=128, lora_r=8, proj_dim=512, proj_chunk_rows=256, select_fraction=0.2
)
RHO_CFG = RhoConfig(reference_steps=60, reference_lr=3e-3, select_fraction=0.2)
DOREMI_CFG = DoremiConfig(
    reference_data="target",
    reference_steps=60,
    reference_lr=3e-3,
    proxy_steps=30,
    proxy_lr=1e-3,
    batch_size=60,
)
CONFIGS = {"less": LESS_CFG, "rho": RHO_CFG, "doremi": DOREMI_CFG}


def run_methods(planted: Planted, base: torch.nn.Module, seed: int = FIXTURE_SEED) -> dict[str, MethodResult]:
    """LESS, RHO and DoReMi on the planted corpus, each with its config's ``seed`` set to ``seed``."""
    inputs = dict(counts=planted.counts, model=base, train=planted.train, target=planted.target)
    return {name: run(name, dataclasses.replace(cfg, seed=seed), **inputs) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="session")
def results(planted: Planted, base_model: torch.nn.Module, seeded) -> dict[str, MethodResult]:
    """Each model-based method run once on the planted corpus (shared by several tests)."""
    with seeded(FIXTURE_SEED):
        return run_methods(planted, base_model, FIXTURE_SEED)
