"""LESS across ranks (baselines/less.py, "Across ranks"): two gloo processes under torchrun, each computing the
features of its share of the pool, gather exactly the one-process features, scores and selection.

Tolerance: each row's gradient is taken in the same batch on either path; only the projection pass holds fewer
rows (16 instead of the whole pool), so the features could differ by fp32 rounding of that matmul. They are
asserted equal to 1e-6 absolute (unit-norm features, dot products summed over 256 coordinates); observed: bitwise
equal on CPU with one thread per process, and so are the scores, the selection and the weights.

Marked ``distributed`` (``-m distributed`` runs just these); gloo only, so deepspeed is not needed. Each torchrun
job takes ~8 s on 2 cores, the CLI test ~35 s. Every job gets a free port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from baselines.parts import Parts

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("less_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(out: Path, nproc: int, store: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                                                 os.environ.get("PYTHONPATH", "")])}
    args = [str(WORKER), str(out), str(store) if store is not None else "-"]
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                                      "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    res = subprocess.run([sys.executable, *launcher, *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out, weights_only=False)


def scores(doc: dict) -> np.ndarray:
    return np.asarray([s for *_, s in doc["scores"]])


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> dict:
    return run_worker(tmp_path_factory.mktemp("one") / "one.pt", 1)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[dict, Path]:
    d = tmp_path_factory.mktemp("two")
    return run_worker(d / "two.pt", 2, d / "store"), d / "store"


def test_gathered_features_equal_one_process(one, two):
    got, _ = two
    assert got["phi"].shape == one["phi"].shape == (120, 256)
    assert got["psi"].shape == one["psi"].shape == (24, 256)
    torch.testing.assert_close(got["phi"], one["phi"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["psi"], one["psi"], rtol=0, atol=1e-6)


def test_scores_selection_and_weights_equal_one_process(one, two):
    got, _ = two
    np.testing.assert_allclose(scores(got), scores(one), rtol=0, atol=1e-6)
    assert [i for i, *_ in got["scores"]] == [i for i, *_ in one["scores"]]  # the original row order
    assert got["selected"] == one["selected"]
    assert got["weights"] == pytest.approx(one["weights"], abs=1e-12)
    assert got["info"]["ranks"] == 2 and got["info"]["feature_group_rows"] == 16
    assert "ranks" not in one["info"]  # one process: the diagnostics are as before


def test_resume_on_two_ranks_reads_stored_chunks_and_recomputes_missing_ones(one, two, tmp_path):
    """Every chunk of both warmup epochs is stored (by whichever rank computed it); after deleting some and
    zeroing one, a rerun on the same store recomputes the deleted ones (scores as before) and reads the zeroed
    one (its rows lose exactly that contribution)."""
    got, store = two
    files = sorted(store.glob("less-ckpt*-rows16-*.parquet"))
    assert len(files) == 2 * 8  # per epoch 8 chunks of 16 rows (the last of 8)
    for f in files[1::3]:
        f.unlink()
    parts = Parts(store, "less-ckpt1-rows16")
    kept = next(s for s in range(0, 120, 16) if parts.has(s))
    zeroed = parts.get(kept)
    assert zeroed is not None
    parts.put(kept, np.zeros_like(zeroed))
    again = run_worker(tmp_path / "again.pt", 2, store)
    rows = np.arange(kept, kept + len(zeroed))
    other = np.setdiff1d(np.arange(120), rows)
    np.testing.assert_allclose(scores(again)[other], scores(one)[other], rtol=0, atol=1e-6)
    assert not np.allclose(scores(again)[rows], scores(one)[rows], atol=1e-6)


def test_cli_two_ranks_match_one_process(tmp_path):
    """`curate reweight --method less --launcher deepspeed --nproc 2` (CPU, gloo) writes one run folder from
    rank 0 with the single-process run's scores and weights, and leaves no checkpoints behind."""
    rows = [{"instruction": f"{s} question {i}", "input": "", "output": f"{s} answer {i}"}
            for s in ("math", "code") for i in range(24)]
    for s in ("math", "code"):
        (tmp_path / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                     if r["instruction"].startswith(s)))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-c", "from curate.cli import main; main()", *args], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    cli("ingest", "math.jsonl", "code.jsonl", "-q")
    cli("ingest", "val.jsonl", "--split", "val", "-q")
    common = ["--method", "less", "template=plain", "max_len=32", "tiny.hidden=32", "less.warmup_epochs=1",
              "less.warmup_min_rows=8", "less.proj_dim=128", "less.grad_batch_size=4", "less.lr=0.01", "-q"]
    cli("reweight", *common, "--out", "single")
    res = cli("reweight", "--launcher", "deepspeed", "--nproc", "2", *common, "--out", "ranks")
    assert res.stdout.count("wrote ranks") == 1  # only rank 0 reports and writes
    single, ranks = (pq.read_table(tmp_path / r / "scores.parquet").to_pylist() for r in ("single", "ranks"))
    assert [r["example_id"] for r in ranks] == [r["example_id"] for r in single]
    np.testing.assert_allclose([r["score"] for r in ranks], [r["score"] for r in single], rtol=0, atol=1e-6)
    docs = [json.loads((tmp_path / r / "weights.json").read_text()) for r in ("single", "ranks")]
    assert docs[1]["sources"] == pytest.approx(docs[0]["sources"], abs=1e-9)
    assert docs[1]["diagnostics"]["ranks"] == 2 and "ranks" not in docs[0]["diagnostics"]
    assert not (tmp_path / "ranks" / "checkpoints").exists()
