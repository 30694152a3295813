"""What each data-selection method costs, as a multiple of one fine-tuning epoch on the same pool.

Run::

    .venv/bin/python benchmarks/bench_methods.py                # tiny model, 4 sources x 2,000 rows, CPU
    .venv/bin/python benchmarks/bench_methods.py --device cuda --model models/smollm2-135m --json out.json

Builds one pool in a temporary folder (generated prompt/response rows, 10-40 words of prompt and 20-120 of
response, a different vocabulary per source, plus a ``val`` target split drawn mostly like the first source),
ingested with ``curate.ingest`` into a DuckDB store. Then, in this process, on ``--device``:

- each method (uniform, LESS, RHO, DoReMi, ScaleBiO) runs ``curate.pipeline.reweight`` at its DEFAULT settings,
  what ``curate reweight --method M`` gives a user: reading the store, the tiny model's BPE tokenizer,
  tokenization, the model build, every pass of the method itself and writing the run folder;
- the reference is ONE epoch of compare's fine-tune (``curate.recipe.finetune_arm``, ``Recipe`` defaults with
  ``epochs=1``: batch 16, ceil(rows / 16) steps) of the same base model over the same pool: loading the base,
  tokenizing and training.

Imports are done before anything is timed. With ``--repeats R`` every method and the fine-tune run R times in
rounds (so load from other processes hits them alike) and the median is reported. Read ``x epoch`` as "running
this method costs as much as N fine-tuning epochs": the number to weigh against what the selected data buys. The
``work`` column states the default step counts that were timed; a method that fails at its defaults is reported
as failed, not tuned until it passes. Ratios, not seconds, are what carries over between machines.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import sync

from curate import methods
from curate.corpus import Rows, load_run_data
from curate.db import open_db
from curate.ingest import ingest_paths
from curate.launch import check_device, resolve_device
from curate.modeling import TinyModel
from curate.pipeline import job_for, reweight
from curate.recipe import Recipe, finetune_arm, resolved_steps
from curate.settings import ReweightSettings

METHODS = ("uniform", "less", "rho", "doremi", "scalebio")
FINETUNE = "finetune (1 epoch)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000, help="pool rows per source")
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--target-rows", type=int, default=200, help="rows of the val target split")
    ap.add_argument("--model", default="tiny", help="tiny, or a local Hugging Face causal LM folder")
    ap.add_argument("--tiny-hidden", type=int, default=TinyModel.hidden, help="tiny.hidden of --model tiny")
    ap.add_argument("--tiny-layers", type=int, default=TinyModel.layers, help="tiny.layers of --model tiny")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (methods and fine-tune alike)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every method and the fine-tune (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared machine 2 threads ran a step 2x slower; raise when idle)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not args.methods or not set(args.methods) <= set(METHODS):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    try:
        check_device(args.device)
        resolve_device(args.device)
    except Exception as e:  # noqa: BLE001 - curate's own one-line reason
        ap.error(str(e))
    return args


def _text(rng: random.Random, words: list[str], low: int, high: int) -> str:
    n = rng.randint(low, high)
    out = [rng.choice(words) for _ in range(n)]
    for i in range(rng.randint(6, 14), n, rng.randint(6, 14)):  # sentence breaks
        out[i] += "."
    return " ".join(out).capitalize() + "."


def build_store(root: Path, args: argparse.Namespace) -> Path:
    """Generated JSONL sources (one vocabulary each, sharing a common one) and a target, ingested into a store."""
    rng = random.Random(args.seed)
    syllables = ["ka", "lo", "mi", "ren", "ta", "sor", "vel", "du", "pi", "an", "qui", "ber", "os", "na", "tel"]

    def vocab(n: int) -> list[str]:
        return ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(n)]

    common, topics = vocab(150), [vocab(200) for _ in range(args.sources)]
    folder = root / "pool"
    folder.mkdir()
    files = []
    for s in range(args.sources):
        words = common + topics[s]
        rows = [{"prompt": _text(rng, words, 10, 40), "response": _text(rng, words, 20, 120)}
                for _ in range(args.rows)]
        files.append(_jsonl(folder / f"source{s}.jsonl", rows))
    target = [{"prompt": _text(rng, common + topics[0 if rng.random() < 0.8 else 1], 10, 40),
               "response": _text(rng, common + topics[0], 20, 120)} for _ in range(args.target_rows)]
    db = root / "pool.duckdb"
    with open_db(db) as con:
        ingest_paths(con, files)
        ingest_paths(con, [_jsonl(root / "target.jsonl", target)], split="val")
    return db


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def work(method: str, cfg: Any, pool: int) -> str:
    """The default step counts a method ran, in words."""
    if method == "scalebio":
        return f"{cfg.steps} steps x ({cfg.batch_size} pool + {cfg.val_batch_size} target rows), 3 passes/step"
    if method == "less":
        warm = min(pool, max(cfg.warmup_min_rows, math.ceil(cfg.warmup_fraction * pool)))
        return (f"LoRA warmup {cfg.warmup_epochs} ep x {warm} rows; {cfg.warmup_epochs} gradient passes "
                f"over pool + target, d={cfg.proj_dim}")
    if method == "rho":
        return f"reference {cfg.reference_steps} steps x {cfg.reference_batch_size}; scores pool with 2 models"
    if method == "doremi":
        return f"reference {cfg.reference_steps} + proxy {cfg.proxy_steps} steps x {cfg.batch_size}"
    return "counts only, no model"


def timed(fn: Any, device: str) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def run_method(db: Path, settings: ReweightSettings, run_dir: Path, device: str) -> tuple[float, Any, Any]:
    """(seconds, outcome or the error's line, the method's config) of one default ``reweight``."""
    job = job_for(db, settings, run_dir, overwrite=True)
    try:
        seconds, outcome = timed(lambda: reweight(job), device)
    except Exception as e:  # noqa: BLE001 - a failure at defaults is a finding, reported in the table
        return float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:120]}", job.cfg
    return seconds, outcome, job.cfg


def finetune_epoch(db: Path, settings: ReweightSettings, base: Path, device: str) -> tuple[float, int]:
    """(seconds, steps) of one epoch of compare's fine-tune over the whole pool."""
    recipe = Recipe(epochs=1.0)

    def go() -> int:
        data = load_run_data(db, settings.target, need_target=False)
        try:
            assert isinstance(data.pool, Rows)  # in memory below stream_above (100,000) rows, as compare's arms are
            finetune_arm(settings, recipe, base, data.pool, settings.seed)
            return resolved_steps(recipe, data.rows)
        finally:
            data.close()

    return timed(go, device)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.methods:  # import every method's code before anything is timed
        methods.get(name).fit_fn()
    import transformers  # noqa: F401 - finetune_arm's, imported untimed too

    settings = ReweightSettings(model=args.model, seed=args.seed, device=args.device,
                                tiny={"hidden": args.tiny_hidden, "layers": args.tiny_layers})
    begin = time.perf_counter()
    times: dict[str, list[float]] = {m: [] for m in (*args.methods, FINETUNE)}
    notes: dict[str, str] = {}
    base: Path | None = None
    ft_settings = settings
    with tempfile.TemporaryDirectory(prefix="bench_methods_") as tmp:
        root = Path(tmp)
        db = build_store(root, args)
        pool = args.rows * args.sources
        for r in range(args.repeats):
            order = args.methods[r % len(args.methods):] + args.methods[: r % len(args.methods)]
            for m in order:
                seconds, outcome, cfg = run_method(db, replace(settings, method=m), root / f"r{r}-{m}", args.device)
                times[m].append(seconds)
                notes[m] = outcome if isinstance(outcome, str) else work(m, cfg, pool)
                if base is None and not isinstance(outcome, str) and (outcome.run_dir / "base_model").is_dir():
                    base = outcome.run_dir / "base_model"
                    ft_settings = replace(settings, max_len=int(outcome.diagnostics["tokenization"]["max_len"]))
                print(f"  round {r + 1}: {m:<9} {seconds:8.1f}s", flush=True)
            if base is None:
                raise SystemExit("error: no model-based method finished, so there is no base model to fine-tune")
            seconds, steps = finetune_epoch(db, ft_settings, base, args.device)
            times[FINETUNE].append(seconds)
            notes[FINETUNE] = f"{steps} steps x {Recipe.batch_size} rows (Recipe defaults, epochs=1)"
            print(f"  round {r + 1}: finetune  {seconds:8.1f}s", flush=True)
    epoch = statistics.median(times[FINETUNE])
    result = {"pool_rows": pool, "target_rows": args.target_rows, "sources": args.sources, "model": args.model,
              "tiny": settings.tiny if args.model == "tiny" else None, "device": resolve_device(args.device),
              "max_len": ft_settings.max_len, "threads": args.threads, "repeats": args.repeats,
              "total_seconds": round(time.perf_counter() - begin, 1),
              "rows": {m: {"seconds": statistics.median(t), "x_epoch": statistics.median(t) / epoch,
                           "all_seconds": t, "work": notes[m]} for m, t in times.items()}}
    model = f"tiny {args.tiny_layers} layers x {args.tiny_hidden} hidden" if args.model == "tiny" else args.model
    print(f"\npool {args.sources} x {args.rows} rows, target {args.target_rows}, {model}, max_len "
          f"{ft_settings.max_len}, {result['device']}, {args.threads} torch thread(s), median of {args.repeats}")
    print(f"{'method':<20}{'seconds':>9}{'x epoch':>9}  work at defaults")
    for m, row in result["rows"].items():
        print(f"{m:<20}{row['seconds']:>9.1f}{row['x_epoch']:>9.2f}  {row['work']}")
    print(f"(benchmark wall time {result['total_seconds']:.0f}s, store build included)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
