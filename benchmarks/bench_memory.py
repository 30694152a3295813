"""Peak memory of ScaleBiO (full, LISA, LoRA shared base) against plain full-parameter AdamW fine-tuning.

Run:  .venv/bin/python benchmarks/bench_memory.py            (defaults: ~10M-param Llama, batch 8 x 128, CPU)
      .venv/bin/python scripts/prepare_smollm2.py models/smollm2-135m
      .venv/bin/python benchmarks/bench_memory.py --model models/smollm2-135m --steps 4   (SmolLM2-135M, ~6 min)
      .venv/bin/python benchmarks/bench_memory.py --model models/smollm2-135m --device cuda --bf16 --steps 4 --json
      .venv/bin/python benchmarks/bench_memory.py --help

Each variant runs ``--steps`` steps in a fresh subprocess (so no variant inherits another's heap) and reports:
 - peak RSS: VmHWM from /proc/self/status. ``getrusage``'s ru_maxrss is not used because Linux carries it across
   ``execve``, so a child started by a big parent would report the parent's peak;
 - above floor: peak minus the RSS measured after imports and batch creation, before any model is built;
 - an exact breakdown of the live tensors after the step that held the most: parameters (every model copy the
   method keeps, shared storages once; u trains the loaded model in place, as in ``curate reweight``), gradients
   and optimizer state (:func:`solvers.memory.breakdown`). Activations are transient; they are the rest of "above
   floor".
LISA redraws every ``--lisa-period`` steps, so over the default 12 steps it sees six draws: ``scalebio_lisa``
releases the AdamW moments of blocks it freezes (the default), ``scalebio_lisa_keep`` keeps them (the authors'
behaviour) and shows the state that builds up. ``scalebio_ckpt`` is full ScaleBiO with gradient checkpointing, which
changes activations only (the "above floor" column). ``scalebio_lisa_ds2_zero2`` / ``_zero3`` run ScaleBiO + LISA
through ``solvers.distributed`` on 2 gloo ranks (CPU, half the threads each) and report the rank that peaked
highest: its module parameters, and as "optim" its fp32 partitions plus AdamW moments. Not a test; RSS varies a
little with the allocator.
Peak RSS also counts freed memory that glibc keeps in its heap (once a large tensor is freed, glibc serves tensors
up to 32 MiB from the heap and rarely hands that memory back): a ZeRO-3 rank, which gathers and releases every
module's parameters each pass, keeps more of it than one process does. ``--malloc-mmap-threshold 131072`` sets
glibc's ``MALLOC_MMAP_THRESHOLD_`` for every variant's processes alike, so freed tensors return to the system and
the peak is that of the live memory.
On a GPU (``--device cuda``, ``--bf16`` for autocast over fp32 weights) "peak" is ``torch.cuda.max_memory_allocated``
and "floor" what the allocator held before the model was built (the batches); the breakdown is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import torch
from _common import (
    DS_PROCS,
    FixedBatches,
    add_device_args,
    add_size_args,
    check_device_args,
    describe_model,
    make_batch,
    memory_now,
    memory_peak,
    new_model,
    run_ranks,
    sync,
    use_model_vocab,
)
from _common import FineTune as _FineTune
from _common import ScaleBiO as _ScaleBiO

from solvers.memory import MemoryBreakdown, breakdown, optimizer_state_bytes, tensor_bytes
from solvers.scalebio.loop import enable_checkpointing

VARIANTS = ("finetune", "scalebio", "scalebio_ckpt", "scalebio_lisa", "scalebio_lisa_keep", "scalebio_lora")
DS_VARIANTS = {"scalebio_lisa_ds2_zero2": 2, "scalebio_lisa_ds2_zero3": 3}  # per rank, 2 gloo ranks (CPU only)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="a local Hugging Face causal LM folder instead of the Llama below")
    add_size_args(ap)
    add_device_args(ap)
    ap.add_argument("--lisa-period", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12, help="steps per variant")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--variants", default=",".join(VARIANTS + tuple(DS_VARIANTS)),
                    help="comma-separated subset (the *_ds2_* rows need deepspeed and run on CPU only)")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    ap.add_argument("--child", choices=VARIANTS + tuple(DS_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--ds-out", help=argparse.SUPPRESS)  # a torchrun rank writes its numbers to DS_OUT.RANK
    ap.add_argument("--ds-config", default="", help="a DeepSpeed JSON config for the *_ds2_* rows (buckets, offload)")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=0, metavar="BYTES",
                    help="glibc MALLOC_MMAP_THRESHOLD_ for every variant (e.g. 131072: peak RSS follows live memory)")
    args = ap.parse_args(argv)
    check_device_args(args)
    use_model_vocab(args)
    return args


class FineTune(_FineTune):
    """The fine-tuning reference, plus what it holds in memory."""

    def held(self) -> MemoryBreakdown:
        return breakdown([self.model], [self.opt])


class ScaleBiO(_ScaleBiO):
    """ScaleBiO steps on ``caller``, the loaded model, which u trains in place (``consume=True``)."""

    def __init__(self, caller: torch.nn.Module, args: argparse.Namespace, variant: str) -> None:
        lora = None
        if variant == "scalebio_lora":
            from solvers.lora import LoraSpec

            lora = LoraSpec(r=args.lora_r)
        self.caller = caller
        # as `curate reweight` runs it: u trains the loaded model in place (consume), w is a copy
        super().__init__(caller, args.sources, lisa_layers=args.lisa_layers if variant.startswith("scalebio_lisa")
                         else None, lisa_period=args.lisa_period, release_state=variant == "scalebio_lisa",
                         lora=lora, consume=True, autocast_bf16=args.bf16)
        if variant == "scalebio_ckpt":
            enable_checkpointing(self.state.u, self.state.w)

    def held(self) -> MemoryBreakdown:
        s = self.state
        shared: list[Any] = [s.u.shared] if hasattr(s.u, "shared") else []  # LoRA: the base both adapters share
        return breakdown([self.caller, s.u, s.w, *shared], [s.opt_u, s.opt_w, s.opt_lambda])  # storages once


def child(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    batch, val = make_batch(args, 0), make_batch(args, 1)
    floor = memory_now(args.device)
    model = new_model(args)
    runner = (FineTune(model, autocast_bf16=args.bf16) if args.child == "finetune"
              else ScaleBiO(model, args, args.child))
    held = MemoryBreakdown(0, 0, 0)
    for _ in range(args.steps):
        runner.step(batch, val)
        now = runner.held()
        held = now if now.total > held.total else held
    sync(args.device)
    return {"floor": floor, "peak": memory_peak(args.device), "params": held.params, "grads": held.grads,
            "optimizer": held.optimizer}


def ds_child(args: argparse.Namespace) -> None:
    """One rank of 2: ScaleBiO + LISA through ``solvers.distributed`` (u and w as ZeRO engines, u training the
    loaded model in place as in ``curate reweight``); writes this rank's floor, peak and the most its tensors
    held (module parameters; fp32 partitions plus AdamW moments as "optimizer"; gradients are DeepSpeed's
    buckets and partitions, not counted)."""
    import torch.distributed as dist

    from solvers.distributed import DeepSpeedEngine, check_supported, flat_partitions, shutdown
    from solvers.scalebio import ScaleBiOConfig, fit

    torch.set_num_threads(args.threads)
    user = json.loads(open(args.ds_config).read()) if args.ds_config else None
    engine = DeepSpeedEngine(DS_VARIANTS[args.child], user)
    batch, val = make_batch(args, 0), make_batch(args, 1)
    floor = memory_now(args.device)
    cfg = ScaleBiOConfig(steps=args.steps, batch_size=args.batch, val_batch_size=args.batch, lr_model=1e-4,
                         lr_lambda=1e-2, schedule="constant", checkpoint_every=0, lisa=True,
                         lisa_layers=args.lisa_layers, lisa_period=args.lisa_period)
    held = MemoryBreakdown(0, 0, 0)

    def on_step(_row: dict[str, float]) -> None:
        nonlocal held
        inner = [getattr(e.optimizer, "optimizer", e.optimizer) for e in engine.engines]
        flat = [f for e in engine.engines for _, f in flat_partitions(e)]
        # the module's tensors: whole parameters, or under ZeRO-3 this rank's partitions (ds_tensor)
        params = [t for m in engine.modules for p in m.parameters() for t in (p.data, getattr(p, "ds_tensor", None))]
        optim = sum(optimizer_state_bytes(o) for o in inner) + tensor_bytes(flat)
        now = MemoryBreakdown(tensor_bytes(params), 0, optim)
        held = now if now.total > held.total else held

    try:
        check_supported(cfg, engine.stage)
        fit(new_model(args), FixedBatches(batch, args.sources), FixedBatches(val, args.sources), cfg,
            on_step=on_step, consume=True, engine=engine)
        doc: dict[str, Any] = {"floor": floor, "peak": memory_peak(args.device), "params": held.params,
                               "grads": 0, "optimizer": held.optimizer}
    except ValueError as e:
        doc = {"error": str(e)}
    with open(f"{args.ds_out}.{dist.get_rank()}", "w") as f:
        json.dump(doc, f)
    shutdown()


def measure(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    keys = ("model", "vocab", "hidden", "layers", "batch", "seq", "sources", "lisa_layers", "lisa_period", "lora_r",
            "steps", "threads", "device", "ds_config")
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in keys] + (["--bf16"] if args.bf16 else [])
    if variant in DS_VARIANTS:
        return measure_ranks(args, variant, flags)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure_ranks(args: argparse.Namespace, variant: str, flags: list[str]) -> dict[str, Any]:
    """The rank that peaked highest of a 2-rank torchrun job (each rank with half the threads)."""
    import importlib.util
    import tempfile

    if args.device != "cpu" or importlib.util.find_spec("deepspeed") is None:
        return {"error": "needs deepspeed and --device cpu (gloo ranks)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        res = run_ranks(__file__, ["--child", variant, f"--ds-out={out}",
                                   *[f for f in flags if not f.startswith("--threads=")]], args.threads)
        ranks = [json.load(open(f"{out}.{r}")) for r in range(DS_PROCS) if os.path.exists(f"{out}.{r}")]
    if not ranks:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    if "error" in ranks[0]:
        return ranks[0]
    return max(ranks, key=lambda r: r["peak"])


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    mib = 2**20
    base = results.get("finetune", {})
    lines = [
        f"{describe_model(args, new_model(args))}; batch {args.batch} x {args.seq}; {args.steps} steps; "
        f"LISA gamma={args.lisa_layers} period {args.lisa_period}; LoRA r={args.lora_r}; {args.threads} threads; "
        f"{args.device}{' bf16 autocast' if args.bf16 else ''}"
        f"{f'; MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold}' if args.malloc_mmap_threshold else ''}",
        "",
        f"{'variant':<20}{'params':>8}{'grads':>8}{'optim':>8}{'tensors':>9}{'x ft':>7}"
        f"{'peak RSS':>10}{'above floor':>13}{'x ft':>7}   (MiB)",
    ]
    for v, r in results.items():
        if "error" in r:
            lines.append(f"{v:<20}failed: {r['error'][:90]}")
            continue
        tensors = r["params"] + r["grads"] + r["optimizer"]
        above = r["peak"] - r["floor"]
        row = (f"{v:<20}{r['params'] / mib:>8.1f}{r['grads'] / mib:>8.1f}{r['optimizer'] / mib:>8.1f}"
               f"{tensors / mib:>9.1f}")
        if "params" in base:
            base_tensors = base["params"] + base["grads"] + base["optimizer"]
            row += f"{tensors / base_tensors:>7.2f}"
        else:
            row += f"{'':>7}"
        row += f"{r['peak'] / mib:>10.0f}{above / mib:>13.0f}"
        row += f"{above / (base['peak'] - base['floor']):>7.2f}" if "peak" in base else ""
        lines.append(row)
    lines += ["", "tensors: params + grads + optimizer state after the step that held the most (exact); ScaleBiO "
              "runs as `curate reweight` does, u training the loaded model in place and w a copy. peak RSS: VmHWM "
              "of a fresh process; above floor: minus the RSS after imports and batch creation (adds activations "
              "and allocator slack)."]
    if args.device != "cpu":
        lines.append(f"on {args.device} 'peak RSS' is torch.cuda.max_memory_allocated and 'above floor' subtracts what "
                     "the allocator held before the model was built.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child in DS_VARIANTS:
        ds_child(args)
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.malloc_mmap_threshold:  # inherited by every child and rank
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    results = {v: measure(args, v) for v in args.variants.split(",")}
    print(report(args, results))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
