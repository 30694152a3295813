"""Driver for test_less_distributed.py: LESS on a tiny Llama and a tiny tokenized pool, in one process or on every
rank of a torchrun job (gloo, set up here as a user's own script would); rank 0 saves what it got with torch.save.

Usage: less_worker.py OUT.pt [CHECKPOINT_DIR|-] [ROWS_PER_SOURCE]

Saved: the run's scores, selection and weights (:func:`baselines.less.run_less`, with ``CHECKPOINT_DIR`` as its
resumable store), and the gathered pool and target features at the last warmup checkpoint
(:func:`baselines.less.gathered_features`), with the wall time of each part.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from baselines.less import LessConfig, add_lora, gathered_features, lora_params, run_less, warmup, warmup_rows
from baselines.projection import make_projector
from baselines.scoring import subset
from solvers.data import TokenizedSet
from solvers.lm import tiny_llama

SOURCES = ["a", "b", "c"]
CONFIG = LessConfig(lr=1e-2, warmup_epochs=2, warmup_min_rows=24, warmup_batch_size=8, grad_batch_size=8,
                    proj_dim=256, proj_chunk_rows=256, select_fraction=0.25, tasks="by_source")


def token_set(n_per_source: int, names: list[str], seed: int) -> TokenizedSet:
    """Random token rows of 10-16 tokens whose first 4 are prompt (masked), per source."""
    rng = np.random.default_rng(seed)
    ids, labels, src = [], [], []
    for s in range(len(names)):
        for _ in range(n_per_source):
            row = rng.integers(2, 64, size=int(rng.integers(10, 17))).tolist()
            ids.append(row)
            labels.append([-100] * 4 + row[4:])
            src.append(s)
    return TokenizedSet(ids, labels, np.asarray(src, dtype=np.int64), names)


def problem(rows: int) -> tuple[torch.nn.Module, TokenizedSet, TokenizedSet]:
    return (tiny_llama(64, hidden=32, layers=2, heads=2, max_len=32, seed=0), token_set(rows, SOURCES, 1),
            token_set(12, ["t1", "t2"], 2))


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    store = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    model, train, target = problem(rows)
    counts = dict(zip(SOURCES, (int(c) for c in train.counts()), strict=True))
    start = time.perf_counter()
    res = run_less(CONFIG, counts=counts, model=model, train=train, target=target, checkpoint_dir=store)
    run_seconds = time.perf_counter() - start
    # features by themselves: every rank runs the same seeded warmup here (deterministic on CPU)
    wrapped = add_lora(model, CONFIG)
    last = warmup(wrapped, subset(train, warmup_rows(len(train), CONFIG)), CONFIG)[-1]
    dim_in = sum(p.numel() for p in lora_params(wrapped).values())
    projector = make_projector(dim_in, CONFIG.proj_dim, CONFIG.seed, CONFIG.proj_chunk_rows, torch.device("cpu"),
                               "torch")
    start = time.perf_counter()
    phi = gathered_features(wrapped, train, last, projector, CONFIG, precondition=True)
    feature_seconds = time.perf_counter() - start
    psi = gathered_features(wrapped, target, last, projector, CONFIG, precondition=False)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        torch.save({"scores": res.scores, "selected": res.selected, "weights": dict(res.weights), "info": res.info,
                    "phi": phi, "psi": psi, "run_seconds": run_seconds, "feature_seconds": feature_seconds}, out)


if __name__ == "__main__":
    main()
    # as tests/solvers/ds_worker.py: skip the interpreter's teardown, which once aborted a finished rank
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
