"""Ingest throughput: `curate ingest` vs raw DuckDB `read_json` vs `datasets.load_dataset("json")`.

Generates N Alpaca-style JSONL rows (default 1,000,000), then times each reader in its own fresh subprocess (so
page cache is warm for all three and peak RSS is per reader) and prints rows/s, peak memory and the ratios.
Targets (issue 2): curate >= 0.5x raw DuckDB and >= 3x datasets.

    python benchmarks/bench_ingest.py [--rows 1000000] [--workdir /tmp/bench_ingest]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

CHILD = {
    "curate": """
from pathlib import Path
from curate.db import open_db
from curate.ingest import ingest_paths
with open_db(Path(WORK) / 'curate.duckdb') as con:
    (r,) = ingest_paths(con, [Path(WORK) / 'alpaca.jsonl'])
assert r.kept + r.duplicates + r.rejected == r.rows_read
""",
    "duckdb": """
import duckdb
con = duckdb.connect(WORK + '/raw.duckdb')
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?)", [WORK + '/alpaca.jsonl'])
con.close()
""",
    "datasets": """
import datasets
datasets.disable_progress_bars()
ds = datasets.load_dataset('json', data_files=WORK + '/alpaca.jsonl', split='train', cache_dir=WORK + '/hf_cache')
assert len(ds) > 0
""",
}

WRAPPER = """
import resource, sys, time, json
WORK = sys.argv[1]
t = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - t,
                   "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def generate(path: Path, rows: int) -> None:
    """Alpaca-style rows with ~1% exact duplicates, written by DuckDB (seconds, not minutes)."""
    con = duckdb.connect()
    distinct = rows - rows // 100
    con.execute(
        f"""COPY (SELECT 'Explain item ' || (i % {distinct}) || ' of the catalogue in plain words' AS instruction,
                        CASE WHEN i % 3 = 0 THEN 'context ' || i ELSE '' END AS input,
                        'Item ' || (i % {distinct}) || ' is a thing; here is a longer answer about it.' AS output
                 FROM range({rows}) r(i)) TO '{path}' (FORMAT json)"""
    )
    con.close()


def run(name: str, work: Path) -> dict:
    code = WRAPPER.format(body=CHILD[name])
    out = subprocess.run([sys.executable, "-c", code, str(work)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "alpaca.jsonl"
    t = time.perf_counter()
    generate(src, args.rows)
    print(f"generated {args.rows:,} rows ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f}s")
    for f in ("curate.duckdb", "raw.duckdb"):
        (work / f).unlink(missing_ok=True)
    results = {name: run(name, work) for name in ("duckdb", "curate", "datasets")}
    print(f"{'reader':<10} {'seconds':>8} {'rows/s':>12} {'peak MiB':>9}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:>8.2f} {args.rows / r['seconds']:>12,.0f} {r['peak_mib']:>9.0f}")
    vs_duck = results["duckdb"]["seconds"] / results["curate"]["seconds"]
    vs_hf = results["datasets"]["seconds"] / results["curate"]["seconds"]
    print(f"curate vs raw DuckDB: {vs_duck:.2f}x (target >= 0.5x)")
    print(f"curate vs datasets:   {vs_hf:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
