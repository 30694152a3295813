"""The paper's pool size on one machine: time and peak RSS of ingest, reweight, resample and export (issue 16).

Generates S JSONL sources of Alpaca-style rows (default 4,200,000 rows over 18 sources, ~400 bytes a row, written by
DuckDB's COPY in seconds) or takes a folder of existing files, then runs each step in its own process and records
its wall time and peak RSS (the child's ``ru_maxrss`` from ``wait4``):

- ``duckdb``: raw DuckDB ``CREATE TABLE AS SELECT * FROM read_json(...)`` over the same files (the reference);
- ``ingest``: ``curate ingest`` of the folder (one source per file);
- ``reweight``: ``curate reweight --method scalebio`` with a tiny model (50 steps, small batches);
- ``resample``: ``curate resample RUN --budget 20000``;
- ``export``: ``curate export RUN --format parquet``.

Prints a table (seconds, rows/s, peak MiB) and curate's ingest rows/s over raw DuckDB's, and writes JSON. Targets on
the 2-core reference machine: every step under 3 GB peak RSS and flat within 20% from 1M to 4.2M rows (pass both:
``--rows 1000000 4200000``); ingest >= 0.5x raw DuckDB rows/s; resample of 20,000 rows under 5 s.

    python benchmarks/bench_scale.py [--rows 4200000 ...] [--sources 18] [--pool DIR] [--workdir DIR] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

CURATE = str(Path(sys.executable).with_name("curate"))
STEPS = ("duckdb", "ingest", "reweight", "resample", "export")
RSS_TARGET_MIB = 3 * 1024
RAW_DUCKDB = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?)", [sys.argv[2]])
print(con.execute("SELECT count(*) FROM t").fetchone()[0])
con.close()
"""


def generate(folder: Path, rows: int, sources: int) -> list[Path]:
    """One JSONL file per source; lengths vary per row like Alpaca's (short instructions, longer answers), and
    about 1% of each source's rows repeat an earlier one, so the duplicate path is exercised."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    files = []
    for s in range(sources):
        n = rows // sources + (1 if s < rows % sources else 0)
        distinct = max(1, n - n // 100)
        path = folder / f"source_{s:02d}.jsonl"
        con.execute(
            f"""COPY (SELECT
                  'Explain how item ' || k || ' of topic {s} relates to ' || repeat('the catalogue ', 1 + k % 5)
                    || 'in plain words.' AS instruction,
                  CASE WHEN k % 3 = 0 THEN 'Context: ' || repeat('some background on item ' || k || '. ', 1 + k % 4)
                       ELSE '' END AS input,
                  'Item ' || k || ' of topic {s} is a thing. ' || repeat('Here is a longer answer about it, with a '
                    || 'reason and an example. ', 2 + k % 9) AS output
                FROM (SELECT i % {distinct} AS k FROM range({n}) r(i))) TO '{path}' (FORMAT json)"""
        )
        files.append(path)
    con.close()
    return files


def target_file(folder: Path) -> Path:
    """A small validation split for ScaleBiO's target (ingested untimed, after the pool)."""
    path = folder / "target.jsonl"
    duckdb.connect().execute(
        f"""COPY (SELECT 'Explain how item ' || i || ' relates to the catalogue.' AS instruction, '' AS input,
                   'Item ' || i || ' is a thing. Here is the answer.' AS output FROM range(2000) r(i))
            TO '{path}' (FORMAT json)""")
    return path


MEASURE = """
import json, os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
timer = float(sys.argv[1])
try:
    out, _ = proc.communicate(timeout=timer)
except subprocess.TimeoutExpired:
    proc.kill(); out, _ = proc.communicate()
seconds = time.perf_counter() - t
import resource
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stdout.buffer.write(out[-4000:])
print("\\n__MEASURE__" + json.dumps({"rc": proc.returncode, "seconds": seconds, "peak_mib": peak}))
"""


def measured(cmd: list[str], timeout: float) -> dict:
    """``cmd`` under a one-off wrapper process, so ``RUSAGE_CHILDREN`` holds this step's peak RSS alone."""
    res = subprocess.run([sys.executable, "-c", MEASURE, str(timeout), *cmd], capture_output=True, text=True)
    head, _, tail = res.stdout.rpartition("__MEASURE__")
    if not tail:
        return {"cmd": " ".join(cmd), "rc": res.returncode, "seconds": 0.0, "peak_mib": 0.0,
                "tail": res.stderr.strip().splitlines()[-3:]}
    stats = json.loads(tail)
    return {"cmd": " ".join(cmd), "rc": stats["rc"], "seconds": round(stats["seconds"], 2),
            "peak_mib": round(stats["peak_mib"], 1), "tail": head.strip().splitlines()[-3:]}


def run_size(pool: Path, rows: int, work: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every step once on ``pool``, in a fresh store under ``work``."""
    for p in ("curate.duckdb", "curate.duckdb.wal", "raw.duckdb", "raw.duckdb.wal"):
        (work / p).unlink(missing_ok=True)
    for d in ("run", "export"):
        shutil.rmtree(work / d, ignore_errors=True)
    db, run, files = work / "curate.duckdb", work / "run", sorted(pool.glob("*.jsonl"))
    out: dict[str, dict] = {}
    only = set(args.steps)
    if "duckdb" in only:
        out["duckdb"] = measured([sys.executable, "-c", RAW_DUCKDB, str(work / "raw.duckdb"), str(pool / "*.jsonl")],
                                 args.step_timeout)
        (work / "raw.duckdb").unlink(missing_ok=True)
    out["ingest"] = measured([CURATE, "ingest", *map(str, files), "--db", str(db), "--quiet"], args.step_timeout)
    subprocess.run([CURATE, "ingest", str(target_file(work)), "--split", "val", "--db", str(db), "--quiet"],
                   check=True, capture_output=True)
    if "reweight" in only:
        out["reweight"] = measured(
            [CURATE, "reweight", "--method", "scalebio", "--steps", str(args.sb_steps), "--db", str(db), "--out",
             str(run), "--quiet", "template=plain", "batch_size=4", "val_batch_size=4", "tiny.hidden=32",
             "tiny.layers=1", "tiny.heads=2", "max_len=64"], args.step_timeout)
    if only & {"resample", "export"} and not (run / "weights.json").exists():  # they still get a run to work on
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([CURATE, "reweight", "--method", "uniform", "--db", str(db), "--out", str(run), "--quiet"],
                       check=True, capture_output=True)
        if "reweight" in out:
            out["reweight"]["note"] = "failed or timed out; resample/export use a uniform run instead"
    if "resample" in only:
        out["resample"] = measured([CURATE, "resample", str(run), "--budget", str(args.budget), "--db", str(db),
                                    "--quiet"], args.step_timeout)
    if "export" in only:
        out["export"] = measured([CURATE, "export", str(run), "--format", "parquet", "--out", str(work / "export"),
                                  "--quiet"], args.step_timeout)
    for r in out.values():
        r["rows"] = rows
    return out


def report(results: dict[int, dict[str, dict]], budget: int) -> list[str]:
    """The table, the ingest ratio per size, and RSS flatness across sizes."""
    lines = [f"{'rows':>10} {'step':<9} {'rc':>3} {'seconds':>8} {'rows/s':>11} {'peak MiB':>9}  target"]
    for rows, steps in results.items():
        for name, r in steps.items():
            per_s = (budget if name in ("resample", "export") else rows) / r["seconds"] if r["seconds"] else 0
            ok = r["peak_mib"] < RSS_TARGET_MIB
            if name == "resample":
                ok = ok and r["seconds"] < 5
            lines.append(f"{rows:>10,} {name:<9} {r['rc']:>3} {r['seconds']:>8.1f} {per_s:>11,.0f} "
                         f"{r['peak_mib']:>9.0f}  {'ok' if ok and r['rc'] == 0 else 'MISS'}")
        if "duckdb" in steps and steps["ingest"]["seconds"]:
            ratio = steps["duckdb"]["seconds"] / steps["ingest"]["seconds"]
            steps["ingest"]["vs_duckdb"] = round(ratio, 3)
            lines.append(f"{rows:>10,} curate ingest rows/s / raw DuckDB rows/s: {ratio:.2f}x (target >= 0.5x)")
    sizes = sorted(results)
    if len(sizes) > 1:
        lo, hi = results[sizes[0]], results[sizes[-1]]
        for name in hi:
            if name in lo and lo[name]["peak_mib"]:
                growth = hi[name]["peak_mib"] / lo[name]["peak_mib"] - 1
                lines.append(f"peak RSS of {name}: {growth:+.0%} from {sizes[0]:,} to {sizes[-1]:,} rows "
                             f"(target within 20%)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[4_200_000], help="pool sizes to run (generated)")
    ap.add_argument("--sources", type=int, default=18)
    ap.add_argument("--pool", type=Path, default=None, help="a folder of existing .jsonl files instead of generating")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"))
    ap.add_argument("--json", type=Path, default=None, help="where to write results (default WORKDIR/results.json)")
    ap.add_argument("--budget", type=int, default=20_000)
    ap.add_argument("--sb-steps", type=int, default=50, help="ScaleBiO steps")
    ap.add_argument("--steps", "--stages", nargs="+", default=list(STEPS), choices=STEPS,
                    help="steps to run (ingest always), e.g. --steps duckdb ingest resample export")
    ap.add_argument("--step-timeout", type=float, default=1800, help="seconds before a step is killed")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, dict]] = {}
    sizes = [None] if args.pool else args.rows
    for rows in sizes:
        if args.pool:
            pool = args.pool
            con = duckdb.connect()
            n_rows = int(con.execute("SELECT count(*) FROM read_json(?)", [str(pool / "*.jsonl")]).fetchone()[0])
        else:
            assert rows is not None
            n_rows, pool = rows, args.workdir / f"pool_{rows}_{args.sources}"
            if not (pool / ".complete").exists():
                t = time.perf_counter()
                generate(pool, rows, args.sources)
                (pool / ".complete").touch()
                mib = sum(f.stat().st_size for f in pool.glob("*.jsonl")) / 2**20
                print(f"generated {rows:,} rows in {args.sources} sources ({mib:,.0f} MiB) in "
                      f"{time.perf_counter() - t:.1f}s", flush=True)
        results[n_rows] = run_size(pool, n_rows, args.workdir, args)
        print("\n".join(report({n_rows: results[n_rows]}, args.budget)), flush=True)
    lines = report(results, args.budget)
    print("\n" + "\n".join(lines))
    dest = args.json or args.workdir / "results.json"
    dest.write_text(json.dumps({"sources": args.sources, "budget": args.budget, "results": results,
                                "table": lines}, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
