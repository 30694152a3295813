"""Driver for test_scalebio_distributed.py: one ScaleBiO run, single-process (``fit``) or on every rank of a
torchrun job (``fit_distributed``); rank 0 writes the result as JSON.

Usage: ds_worker.py OUT.json ZERO|file|ref [DS_CONFIG.json]; ``file`` takes the ZeRO stage from DS_CONFIG."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from solvers.data import TokenizedSet
from solvers.lm import tiny_llama
from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

SOURCES = ["a", "b", "c"]
CONFIG = ScaleBiOConfig(steps=4, batch_size=6, val_batch_size=4, lr_model=1e-2, lr_lambda=0.1,
                        checkpoint_every=0, seed=0)


def token_set(n_per_source: int, n_sources: int, seed: int) -> TokenizedSet:
    rng = np.random.default_rng(seed)
    ids, labels, src = [], [], []
    for s in range(n_sources):
        for _ in range(n_per_source):
            row = rng.integers(2, 64, size=int(rng.integers(10, 17))).tolist()
            ids.append(row)
            labels.append([-100] * 4 + row[4:])
            src.append(s)
    names = SOURCES if n_sources > 1 else ["target"]
    return TokenizedSet(ids, labels, np.asarray(src, dtype=np.int64), names)


def problem():
    return (tiny_llama(64, hidden=32, layers=2, heads=2, max_len=32, seed=0), token_set(12, 3, 1),
            token_set(16, 1, 2))


def result_doc(result) -> dict:
    return {"weights": result.weights, "target_loss": [r["target_loss"] for r in result.trajectory],
            "w_sum": float(sum(p.detach().double().sum() for p in result.model.parameters()))}


def main() -> None:
    torch.set_num_threads(1)
    out, mode = sys.argv[1], sys.argv[2]
    model, train, val = problem()
    if mode == "ref":
        doc = result_doc(fit(model, *make_samplers(train, val, CONFIG), CONFIG))
    else:
        from solvers.distributed import fit_distributed, is_writer, shutdown

        ds_config = json.loads(open(sys.argv[3]).read()) if len(sys.argv) > 3 else None
        stage = None if mode == "file" else int(mode)
        doc = result_doc(fit_distributed(model, *make_samplers(train, val, CONFIG), CONFIG, zero_stage=stage,
                                         ds_config=ds_config))
        writer = is_writer()
        shutdown()
        if not writer:
            return
    with open(out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
    # Skip the interpreter's teardown: once, under a load of ~4 on 2 cores, a rank aborted there after its work
    # was done ("terminate called without an active exception", SIGABRT), failing a run whose results were
    # complete. Everything this worker writes is closed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
