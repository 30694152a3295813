"""Cost of one ScaleBiO step against one plain AdamW fine-tuning step on the same model and batch.

Run:  .venv/bin/python benchmarks/bench_solver.py            (defaults: ~10M-param Llama, batch 8 x 128, CPU)
      .venv/bin/python benchmarks/bench_solver.py --device cuda --bf16 --model models/smollm2-135m \
          --variants finetune,scalebio,scalebio_lisa,scalebio_lora --json          (a GPU, as scripts/gpu_check.sh)
      .venv/bin/python benchmarks/bench_solver.py --help

Time: each variant (fine-tuning, ScaleBiO, ScaleBiO + LISA) is built once in this process; after warm-up steps
the variants take turns step by step (so load from other processes hits all of them alike) and the median step
time is reported. A ScaleBiO step is u on B, w on B and w on the target batch V (same shape as B): three
forward/backward passes and two model optimizer steps, so ~3x is the expected cost (ALGORITHMS.md §4.4).
 Memory: each variant runs a few steps in a fresh subprocess that reports its peak resident set size (VmHWM
from /proc/self/status) and its RSS just before the models are built (after importing torch/transformers and
building the batches). The difference ("above floor") is what the method itself holds: the model copies (for
ScaleBiO the caller's model plus u and w), gradients, AdamW moments and activations. The ratio of totals is
diluted by the ~0.3-0.5 GB every torch process holds, so both are printed. Not a test; numbers vary with load.
On a GPU (``--device cuda``) steps are timed after ``torch.cuda.synchronize`` and memory is the CUDA allocator's
(``memory_allocated`` before the models are built, ``max_memory_allocated`` after the steps); ``--bf16`` runs the
model passes under bf16 autocast with fp32 weights, as ``curate reweight`` does on a GPU.
 DeepSpeed (``--deepspeed``, on when deepspeed is installed): each ScaleBiO variant (full, LISA, LoRA) through
``solvers.distributed`` on 2 gloo processes under torchrun (``DS_ACCELERATOR=cpu``, ZeRO-2), each on half of the
same global batch with half the threads, after the single-process variants; its median step time and its steps/s
over the same single-process variant's. The LISA child redraws every 3 steps: its row is the median of the steps
without a redraw, and the extra time of a redraw step (both engines torn down and rebuilt) is printed beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from _common import (
    DS_PROCS,
    FineTune,
    FixedBatches,
    ScaleBiO,
    add_device_args,
    add_size_args,
    check_device_args,
    make_batch,
    memory_now,
    memory_peak,
    new_model,
    run_ranks,
    sync,
    use_model_vocab,
)

VARIANTS = ("finetune", "scalebio", "scalebio_lisa", "scalebio_lora")
DEFAULT_VARIANTS = ("finetune", "scalebio", "scalebio_lisa")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="a local Hugging Face causal LM folder instead of the Llama below")
    add_size_args(ap)
    sources = next(a for a in ap._actions if a.dest == "sources")
    sources.type, sources.default = _counts, [sources.default]
    sources.help = "sources (groups) in the batch's loss; a comma list (10,1000) also times ScaleBiO at each"
    add_device_args(ap)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, finetune first (the ratios' base); of {', '.join(VARIANTS)}")
    ap.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median reported)")
    ap.add_argument("--memory-steps", type=int, default=3, help="steps per memory subprocess")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--deepspeed", action=argparse.BooleanOptionalAction,
                    default=importlib.util.find_spec("deepspeed") is not None,
                    help="also time ScaleBiO on 2 DeepSpeed ZeRO-2 processes (default: on when installed)")
    ap.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--ds-child", help=argparse.SUPPRESS)  # a torchrun rank; rank 0 writes its times here
    ap.add_argument("--ds-variant", choices=VARIANTS[1:], default="scalebio", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.source_counts, args.sources = args.sources, args.sources[0]
    check_device_args(args)
    args.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not args.variants or args.variants[0] != "finetune" or not set(args.variants) <= set(VARIANTS):
        print(f"error: --variants: list finetune first, then any of {', '.join(VARIANTS[1:])}", file=sys.stderr)
        raise SystemExit(2)
    use_model_vocab(args)
    return args


def _counts(text: str) -> list[int]:
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count or a comma list of counts") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be >= 1")
    return out


def time_source_counts(args: argparse.Namespace) -> dict[int, list[float]]:
    """ScaleBiO's step at each of ``--sources`` K on the same model and batch, steps interleaved. With K above
    the batch size the batch holds one row from each of ``batch`` groups and carries ``group_scale`` = K / batch,
    as the stratified sampler's batches do (``solvers.data.SourceSampler.samples_groups``)."""
    runners, batches = {}, {}
    for k in args.source_counts:
        sized = argparse.Namespace(**{**vars(args), "sources": k})
        runners[k] = build("scalebio", new_model(args), sized)
        batch, val = make_batch(sized, 0), make_batch(sized, 1)
        if k > args.batch:
            batch["group_scale"] = torch.tensor(k / args.batch, dtype=torch.float64)
        batches[k] = (batch, val)
    times: dict[int, list[float]] = {k: [] for k in runners}
    for i in range(args.warmup + args.repeats):
        for k, runner in runners.items():
            sync(args.device)
            start = time.perf_counter()
            runner.step(*batches[k])
            sync(args.device)
            if i >= args.warmup:
                times[k].append(time.perf_counter() - start)
    return times


def report_source_counts(times: dict[int, list[float]]) -> str:
    base_k = min(times)
    base = statistics.median(times[base_k])
    lines = ["", f"{'scalebio K':<16}{'s/step':>9}{f'x K={base_k}':>12}"]
    for k, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"{k:<16}{med:>9.3f}{med / base:>12.3f}")
    lines.append("target: ScaleBiO over 1,000 groups costs < 5% more per step than over 10 (same model, batch).")
    return "\n".join(lines)


def build(variant: str, model: torch.nn.Module, args: argparse.Namespace) -> FineTune | ScaleBiO:
    if variant == "finetune":
        return FineTune(model, autocast_bf16=args.bf16)
    lora = None
    if variant == "scalebio_lora":
        from solvers.lora import LoraSpec

        lora = LoraSpec(r=8)
    return ScaleBiO(model, args.sources, lisa_layers=args.lisa_layers if variant == "scalebio_lisa" else None,
                    lora=lora, autocast_bf16=args.bf16)


def time_steps(args: argparse.Namespace) -> dict[str, list[float]]:
    batch, val = make_batch(args, 0), make_batch(args, 1)
    runners = {v: build(v, new_model(args), args) for v in args.variants}
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for i in range(args.warmup + args.repeats):
        for v, runner in runners.items():
            sync(args.device)
            start = time.perf_counter()
            runner.step(batch, val)
            sync(args.device)
            if i >= args.warmup:
                times[v].append(time.perf_counter() - start)
    return times


def memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    batch, val = make_batch(args, 0), make_batch(args, 1)
    floor = memory_now(args.device)
    runner = build(args.memory_child, new_model(args), args)
    for _ in range(args.memory_steps):
        runner.step(batch, val)
    sync(args.device)
    peak = memory_peak(args.device)
    print(json.dumps({"floor": floor, "peak": peak}))


def measure_memory(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    out = {}
    for v in args.variants:
        cmd = [sys.executable, __file__, "--memory-child", v] + [
            f"--{k.replace('_', '-')}={getattr(args, k)}"
            for k in ("model", "vocab", "hidden", "layers", "batch", "seq", "sources", "lisa_layers",
                      "memory_steps", "threads", "device")] + (["--bf16"] if args.bf16 else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[v] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


SIZE_FLAGS = ("vocab", "hidden", "layers", "batch", "seq", "sources", "warmup", "repeats")


DS_LISA_PERIOD = 3  # the DeepSpeed LISA child redraws often, so the engine rebuild it costs is measured too


def deepspeed_child(args: argparse.Namespace) -> None:
    """One rank: ScaleBiO with u and w as ZeRO-2 engines on the benchmark's batches (``--ds-variant``: the full
    lower level, LISA redrawing every :data:`DS_LISA_PERIOD` steps, or LoRA r=8); rank 0 writes, per step after
    warm-up, its time (from one ``on_step`` call to the next) and whether it began with a LISA redraw."""
    from solvers.distributed import fit_distributed, is_writer, shutdown
    from solvers.scalebio import ScaleBiOConfig

    torch.set_num_threads(args.threads)
    warmup = max(1, args.warmup)  # the first step is timed from the previous one, so at least one is untimed
    extra: dict[str, Any] = {}
    if args.ds_variant == "scalebio_lisa":
        extra = {"lisa": True, "lisa_layers": args.lisa_layers, "lisa_period": DS_LISA_PERIOD}
    elif args.ds_variant == "scalebio_lora":
        extra = {"lower_level": "lora", "lora_r": 8}
    cfg = ScaleBiOConfig(steps=warmup + args.repeats, batch_size=args.batch, val_batch_size=args.batch,
                         lr_model=1e-4, lr_lambda=1e-2, alpha=10.0, schedule="constant", checkpoint_every=0, **extra)
    stamps: list[float] = []
    fit_distributed(new_model(args), FixedBatches(make_batch(args, 0), args.sources),
                    FixedBatches(make_batch(args, 1), args.sources), cfg, zero_stage=2,
                    on_step=lambda _row: stamps.append(time.perf_counter()))
    writer = is_writer()
    shutdown()
    if writer:
        steps = range(warmup, warmup + args.repeats)
        with open(args.ds_child, "w") as f:
            json.dump({"times": [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:], strict=False)],
                       "redraw": [bool(cfg.lisa and t % DS_LISA_PERIOD == 0) for t in steps]}, f)


def time_deepspeed(args: argparse.Namespace, variant: str) -> dict[str, list[Any]]:
    """Step times of ``variant`` on ``DS_PROCS`` torchrun ranks (gloo, CPU), sharing the threads of the others."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        res = run_ranks(__file__, [f"--ds-child={out}", f"--ds-variant={variant}", f"--lisa-layers={args.lisa_layers}",
                                   *[f"--{k}={getattr(args, k)}" for k in SIZE_FLAGS]], args.threads)
        if res.returncode != 0:
            raise RuntimeError(f"the DeepSpeed run failed:\n{res.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def ds_summary(run: dict[str, list[Any]]) -> tuple[float, float | None]:
    """Median time of the steps without a LISA redraw, and the median extra time of those with one."""
    plain = [t for t, r in zip(run["times"], run["redraw"], strict=True) if not r]
    redrawn = [t for t, r in zip(run["times"], run["redraw"], strict=True) if r]
    med = statistics.median(plain)
    return med, (statistics.median(redrawn) - med) if redrawn else None


def report(args: argparse.Namespace, times: dict[str, list[float]], memory: dict[str, Any] | None,
           ds: dict[str, dict[str, list[Any]]]) -> str:
    n_params = sum(p.numel() for p in {id(p): p for p in new_model(args).parameters()}.values())
    blocks = n_params - 2 * args.vocab * args.hidden - args.hidden
    tokens = args.batch * args.seq
    base = statistics.median(times["finetune"])
    lines = [
        f"model: Llama {args.layers} layers x {args.hidden} hidden, vocab {args.vocab}: "
        f"{n_params / 1e6:.2f}M params "
        f"({100 * (1 - blocks / n_params):.0f}% in embeddings + head); batch {args.batch} x {args.seq}; "
        f"{args.threads} threads; {args.device}{' bf16 autocast' if args.bf16 else ''}; median of "
        f"{args.repeats} steps after {args.warmup} warm-up",
        "",
        f"{'variant':<16}{'s/step':>9}{'x finetune':>12}{'train tok/s':>13}"
        f"{'peak MiB':>10}{'above floor':>13}"
        f"{'x finetune':>12}",
    ]
    for v in args.variants:
        med = statistics.median(times[v])
        row = f"{v:<16}{med:>9.3f}{med / base:>12.2f}{tokens / med:>13.0f}"
        if memory is not None:
            peak, above = memory[v]["peak"], memory[v]["peak"] - memory[v]["floor"]
            base_above = memory["finetune"]["peak"] - memory["finetune"]["floor"]
            row += f"{peak / 2**20:>10.0f}{above / 2**20:>13.0f}{above / base_above:>12.2f}"
        lines.append(row)
    for v, run in ds.items():
        med, rebuild = ds_summary(run)
        single = statistics.median(times[v])
        lines.append(f"{v + '_ds2':<16}{med:>9.3f}{med / base:>12.2f}{tokens / med:>13.0f}")
        note = f"; a LISA redraw (both engines rebuilt) adds {rebuild:.3f} s to its step" if rebuild is not None else ""
        lines.append(f"  DeepSpeed ZeRO-2, {DS_PROCS} gloo processes x {max(1, args.threads // DS_PROCS)} threads, "
                     f"same global batch: {1 / med:.2f} steps/s vs {1 / single:.2f} single-process {v} "
                     f"= {single / med:.2f}x{note}")
    lines += [
        "",
        "targets: ScaleBiO <= 3.0x fine-tuning time, ScaleBiO + LISA <= 2.5x.",
        "train tok/s counts the training batch B only (ScaleBiO also reads a target batch V of that size).",
    ]
    if memory is not None and args.device == "cpu":
        lines.append("memory: peak RSS (VmHWM) of a fresh process per variant; 'above floor' subtracts the "
                     "RSS measured after imports and batch creation, before any model is built.")
    elif memory is not None:
        lines.append(f"memory: torch.cuda.max_memory_allocated on {args.device} in a fresh process per variant; "
                     "'above floor' subtracts what was allocated before any model was built (the batches).")
    return "\n".join(lines)


def numbers(args: argparse.Namespace, times: dict[str, list[float]], memory: dict[str, Any] | None,
            ds: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """The report's numbers as one JSON-able dict (``--json``; scripts/gpu_check.sh collects it)."""
    base = statistics.median(times["finetune"])
    out: dict[str, Any] = {"device": args.device, "bf16": args.bf16, "model": args.model or "synthetic Llama",
                           "batch": args.batch, "seq": args.seq, "variants": {}}
    for v, ts in times.items():
        med = statistics.median(ts)
        row = {"s_per_step": med, "steps_per_s": 1 / med, "x_finetune": med / base,
               "train_tokens_per_s": args.batch * args.seq / med}
        if memory is not None and v in memory:
            row.update(peak_mib=memory[v]["peak"] / 2**20,
                       above_floor_mib=(memory[v]["peak"] - memory[v]["floor"]) / 2**20)
        out["variants"][v] = row
    for v, run in ds.items():
        med, rebuild = ds_summary(run)
        out["variants"][f"{v}_ds2"] = {"s_per_step": med, "steps_per_s": 1 / med,
                                       "x_single_process": statistics.median(times[v]) / med,
                                       "lisa_rebuild_s": rebuild}
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    if args.ds_child:
        deepspeed_child(args)
        return
    torch.set_num_threads(args.threads)
    memory = None if args.skip_memory else measure_memory(args)
    times = time_steps(args)
    ds = {}
    if args.deepspeed and args.device == "cpu":
        ds = {v: time_deepspeed(args, v) for v in args.variants if v != "finetune"}
    elif args.deepspeed:
        print(f"note: the DeepSpeed row runs on CPU gloo ranks; skipped with --device {args.device}",
              file=sys.stderr)
    print(report(args, times, memory, ds))
    by_k = time_source_counts(args) if len(args.source_counts) > 1 else None
    if by_k is not None:
        print(report_source_counts(by_k))
    if args.json:
        doc = numbers(args, times, memory, ds)
        if by_k is not None:
            doc["scalebio_by_sources"] = {str(k): statistics.median(ts) for k, ts in by_k.items()}
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
