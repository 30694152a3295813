"""Which torch thread settings keep the demo's fine-tune fast on an idle machine and on a busy one.

Run:  .venv/bin/python benchmarks/bench_threads.py [--steps 150]

Each setting (torch intra-op threads x OpenMP wait policy, or libgomp's spin count as ``spin=N``, i.e.
``GOMP_SPINCOUNT``) runs the demo's fine-tune shape (tiny Llama, hidden 128, 2 layers, batch 32 x 64 tokens,
AdamW) in a fresh subprocess (OpenMP reads its environment when it starts), first alone, then with one
`yes > /dev/null` per core but one competing for the CPU. Printed: the median step time and its ratio to the
reference setting (torch's default threads and wait policy, idle machine) measured in the same run. Not a test;
numbers vary with load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import torch
from solvers.lm import tiny_llama
threads = int(sys.argv[1]); steps = int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = tiny_llama(384, hidden=128, layers=2, heads=4, max_len=64, seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
ids = torch.randint(2, 384, (32, 64))
times = []
for step in range(steps):
    t = time.perf_counter()
    logits = model(input_ids=ids).logits[:, :-1].reshape(-1, 384)
    loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:].reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "times": times[5:]}))
"""


def run(threads: int, policy: str | None, steps: int) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy and policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = policy[len("spin="):]
    elif policy:
        env["OMP_WAIT_POLICY"] = policy
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["threads"], statistics.median(res["times"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    settings = [(0, None), (0, "PASSIVE"), (0, "spin=10000"), (0, "spin=1000"), (1, None)]
    rows = []
    for busy in (False, True):
        hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(max(1, cores - 1))] if busy else []
        try:
            for threads, policy in settings:
                n, t = run(threads, policy, args.steps)
                rows.append((busy, threads or "default", n, policy or "default", t))
        finally:
            for h in hogs:
                h.kill()
    ref = rows[0][4]
    print(f"{'machine':8} {'threads':>8} {'used':>5} {'wait':>16} {'step ms':>8} {'vs default idle':>16}")
    for busy, threads, n, policy, t in rows:
        print(f"{'busy' if busy else 'idle':8} {threads!s:>8} {n:>5} {policy:>16} {t * 1e3:8.1f} {t / ref:15.2f}x")


if __name__ == "__main__":
    main()
