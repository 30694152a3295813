"""Driver for test_scalebio_distributed.py: one ScaleBiO run, single-process (``fit``) or on every rank of a
torchrun job (``fit_distributed``); rank 0 writes the result as JSON.

Usage: ds_worker.py OUT.json VARIANT ZERO|file|ref [--ds-config F] [--ckpt DIR] [--resume] [--kill-at STEP]

VARIANT picks the config (:data:`VARIANTS`): ``full``, ``lisa``, ``lora`` or ``stages`` (α grows once). ``file``
takes the ZeRO stage from ``--ds-config``. ``--kill-at S`` makes rank 0 SIGKILL itself right after step S
(before that step's checkpoint), as a preemption would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys

import numpy as np
import torch

from solvers.data import TokenizedSet
from solvers.lm import tiny_llama
from solvers.scalebio import ScaleBiOConfig, fit, make_samplers

SOURCES = ["a", "b", "c"]
BASE = ScaleBiOConfig(steps=4, batch_size=6, val_batch_size=4, lr_model=1e-2, lr_lambda=0.1, checkpoint_every=0,
                      seed=0)
VARIANTS = {
    "full": BASE,
    # 3 blocks, 1 active, redrawn every 2 steps: blocks leave, stay and return, so moments are carried and dropped
    "lisa": dataclasses.replace(BASE, steps=8, lisa=True, lisa_layers=1, lisa_period=2),
    "lora": dataclasses.replace(BASE, steps=6, lower_level="lora", lora_r=4, lora_alpha=8.0, lora_dropout=0.0,
                                lr_model=5e-2),
    "stages": dataclasses.replace(BASE, steps=6, stages=2, tau=2.0),
}


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


def problem(variant: str):
    layers = 3 if variant == "lisa" else 2
    return (tiny_llama(64, hidden=32, layers=layers, heads=2, max_len=32, seed=0), token_set(12, 3, 1),
            token_set(16, 1, 2))


def result_doc(result) -> dict:
    """The result as JSON; call it on every rank (under ZeRO-3 w's parameters are gathered from all of them)."""
    module = getattr(result.model, "module", result.model)  # a DeepSpeed engine's module
    params = list(module.parameters())
    gathered = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3: each rank holds a partition
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(params)
    with gathered:
        w_sum = float(sum(p.detach().double().sum() for p in params))
    return {"weights": result.weights, "target_loss": [r["target_loss"] for r in result.trajectory],
            "grad_norm_w": [r["grad_norm_w"] for r in result.trajectory], "w_sum": w_sum}


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("mode")
    ap.add_argument("--ds-config")
    ap.add_argument("--ckpt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at", type=int)
    args = ap.parse_args()
    cfg = VARIANTS[args.variant]
    if args.ckpt:
        cfg = dataclasses.replace(cfg, checkpoint_every=2)
    model, train, val = problem(args.variant)

    alive = []

    def on_step(row: dict) -> None:
        if args.mode != "ref":  # DeepSpeed engines alive: a LISA redraw must free the engines it replaces
            import gc

            import deepspeed

            gc.collect()
            alive.append(sum(isinstance(o, deepspeed.DeepSpeedEngine) for o in gc.get_objects()))
        if args.kill_at is not None and row["step"] == args.kill_at and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    if args.mode == "ref":
        doc = result_doc(fit(model, *make_samplers(train, val, cfg), cfg, on_step=on_step,
                             checkpoint_dir=args.ckpt, resume=args.resume))
    else:
        from solvers.distributed import fit_distributed, is_writer, shutdown

        ds_config = json.loads(open(args.ds_config).read()) if args.ds_config else None
        stage = None if args.mode == "file" else int(args.mode)
        doc = result_doc(fit_distributed(model, *make_samplers(train, val, cfg), cfg, zero_stage=stage,
                                         ds_config=ds_config, on_step=on_step, checkpoint_dir=args.ckpt,
                                         resume=args.resume))
        doc["engines_alive"] = max(alive)
        writer = is_writer()
        shutdown()
        if not writer:
            return
    with open(args.out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
    # Skip the interpreter's teardown: once, under a load of ~4 on 2 cores, a rank aborted there after its work
    # was done ("terminate called without an active exception", SIGABRT), failing a run whose results were
    # complete. Everything this worker writes is closed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
