"""Benchmark LESS gradient features (batched ``torch.func`` vs a Python loop) and projection memory.

Run::

    .venv/bin/python benchmarks/bench_baselines.py            # defaults: tiny Llama, 128 examples, d = 8192
    .venv/bin/python benchmarks/bench_baselines.py --hidden 256 --examples 256 --threads 2

Part 1 times the per-example LoRA gradients plus the Adam preconditioning (LESS step 2 before projection) both
ways in the same process on the same examples, checks they agree, and reports features per second. Part 2
projects ``[batch, D]`` features to d = 8192 in a fresh subprocess and reports its peak-RSS growth, next to
the size of one resident projection chunk and of the dense matrix the chunking avoids.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from baselines.less import LessConfig, adam_direction, add_lora, lora_params, per_example_grads
from baselines.less import per_example_grads_loop as loop_grads
from solvers.data import tokenize_rows
from solvers.lm import tiny_llama, train_tokenizer

MEMORY_PROBE = """
import json, resource, sys, time, torch
from baselines.projection import RademacherProjector

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # KiB
    raise KeyError(key)

dim_in, dim_out, batch, chunk_rows, threads = map(int, sys.argv[1:6])
torch.set_num_threads(threads)
x = torch.randn(batch, dim_in)
proj = RademacherProjector(dim_in, dim_out, seed=0, chunk_rows=chunk_rows)
try:  # reset the kernel's peak-RSS mark so VmHWM measures the projection alone
    open("/proc/self/clear_refs", "w").write("5")
    base, method = status("VmRSS"), "VmHWM after clear_refs"
except OSError:
    base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (lower bound)"
start = time.perf_counter()
y = proj.project(x)
seconds = time.perf_counter() - start
peak = status("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_growth_kib": peak - base, "seconds": seconds, "chunk_bytes": proj.chunk_bytes,
                  "method": method}))
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128, help="tiny Llama hidden size")
    p.add_argument("--layers", type=int, default=2, help="tiny Llama layers")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (q/k/v/o projections)")
    p.add_argument("--examples", type=int, default=128, help="examples timed per path")
    p.add_argument("--batch", type=int, default=64, help="examples per vmapped call")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per path (best is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both paths")
    p.add_argument("--proj-dim", type=int, default=8192, help="projected width d")
    p.add_argument("--mem-dim-in", type=int, default=65536, help="feature width D for the memory probe")
    p.add_argument("--mem-batch", type=int, default=32, help="rows projected at once in the memory probe")
    p.add_argument("--chunk-rows", type=int, default=1024, help="projection rows resident at once")
    return p.parse_args()


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[dict]]:
    rng = np.random.default_rng(0)
    pairs = rng.integers(10, 100, size=(args.examples, 2))
    prompts = [f"What is {a} + {b}?" for a, b in pairs]
    answers = [str(a + b) if i % 3 else "." for i, (a, b) in enumerate(pairs)]
    tok = train_tokenizer(prompts + answers, vocab_size=300)
    data = tokenize_rows(tok, prompts, answers, [0] * len(prompts), ["pool"], 128, "plain")
    base = tiny_llama(len(tok), hidden=args.hidden, layers=args.layers, heads=4, max_len=128)
    model = add_lora(base, LessConfig(lora_r=args.lora_r, lora_dropout=0.0)).eval()
    with torch.no_grad():  # non-zero B so the A-gradients are not trivially 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batches = [
        data.batch(list(range(s, min(len(data), s + args.batch)))) for s in range(0, len(data), args.batch)
    ]
    return model, lora_params(model), batches


def time_path(fn, model, params, batches, repeats: int) -> tuple[float, torch.Tensor]:
    m = torch.cat([p.reshape(-1) for p in params.values()]) * 0 + 1e-4
    v = m.square()
    best, feats = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = [adam_direction(fn(model, params, b), m, v, (0.9, 0.999), 1e-8) for b in batches]
        best = min(best, time.perf_counter() - start)
        feats = torch.cat(out)
    return best, feats


def memory_probe(args: argparse.Namespace, dim_in: int) -> dict:
    cmd = [
        sys.executable,
        "-c",
        MEMORY_PROBE,
        str(dim_in),
        str(args.proj_dim),
        str(args.mem_batch),
        str(args.chunk_rows),
        str(args.threads),
    ]
    return json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, params, batches = build(args)
    dim = sum(p.numel() for p in params.values())
    n = sum(b["input_ids"].size(0) for b in batches)
    per_example_grads(model, params, batches[0])  # warm-up (first vmap trace)
    t_fast, fast = time_path(per_example_grads, model, params, batches, args.repeats)
    t_slow, slow = time_path(loop_grads, model, params, batches, args.repeats)
    err = ((fast - slow).abs().max() / fast.abs().max()).item()
    print(
        f"LESS gradient features: tiny Llama hidden={args.hidden} layers={args.layers}, LoRA r={args.lora_r} "
        f"q/k/v/o (D = {dim:,} params), {n} examples, threads={args.threads}, best of {args.repeats}"
    )
    print(f"{'path':<34}{'seconds':>10}{'features/s':>14}{'speedup':>10}")
    print(f"{'python loop (batch size 1)':<34}{t_slow:>10.3f}{n / t_slow:>14.1f}{1.0:>10.2f}")
    print(
        f"{f'torch.func vmap(grad), batch {args.batch}':<34}{t_fast:>10.3f}{n / t_fast:>14.1f}"
        f"{t_slow / t_fast:>10.2f}"
    )
    print(f"max |vmap - loop| / max |feature| = {err:.1e}")
    print()
    print(
        f"Projection to d = {args.proj_dim} ({args.mem_batch} rows, chunk_rows = {args.chunk_rows}, "
        "peak RSS growth of a fresh subprocess)"
    )
    print(f"{'D':>10}{'dense matrix MiB':>18}{'chunk MiB':>11}{'peak growth MiB':>17}{'seconds':>10}")
    for dim_in in sorted({dim, args.mem_dim_in}):
        r = memory_probe(args, dim_in)
        method = r["method"]
        dense, chunk, peak = (
            dim_in * args.proj_dim * 4 / 2**20,
            r["chunk_bytes"] / 2**20,
            r["peak_growth_kib"] / 1024,
        )
        print(f"{dim_in:>10,}{dense:>18.1f}{chunk:>11.1f}{peak:>17.1f}{r['seconds']:>10.2f}")

    print(f"(peak measured with {method}; it includes the {args.mem_batch} x d fp32 output)")


if __name__ == "__main__":
    main()
