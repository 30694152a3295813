"""DeepSpeed engine (solvers/distributed.py): two CPU processes under torchrun, each training on half of every
global batch, must reach the single-process run's weights with the same global batch.

Tolerance: the two runs differ only in floating-point summation order (per-rank partial sums, all-reduce, ZeRO's
flattened gradient buffers), so after 4 steps the weights agree to 2e-5 absolute (observed ~1e-6) and the
per-step target losses to 1e-5, also with a user DeepSpeed config that offloads the optimizer to the host
(ZeRO-Offload works with ``DS_ACCELERATOR=cpu``).

These are the only tests of the multi-process step, so they run by default and in CI (``.ci/run`` installs the
``deepspeed`` extra and refuses to run without it). Marked ``distributed``: ``-m distributed`` runs just them.
Each torchrun job takes ~20 s on 2 cores, and on a fresh machine DeepSpeed first JIT-compiles its shm_comm op
(~30 s more, once per torch extensions cache). Each job gets a free port, so two suites can run on one machine.
Skipped when deepspeed is not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("ds_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out: Path, mode: str, nproc: int = 1, *extra: str) -> dict:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    if mode == "ref":
        cmd = [sys.executable, str(WORKER), str(out), mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(WORKER), str(out), mode, *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref") / "ref.json", "ref")


@pytest.mark.parametrize("zero", [2, 3])
def test_two_ranks_match_one_process(reference, tmp_path, zero):
    got = run(tmp_path / "ds.json", str(zero), nproc=2)
    for source, weight in reference["weights"].items():
        assert got["weights"][source] == pytest.approx(weight, abs=2e-5)
    assert got["target_loss"] == pytest.approx(reference["target_loss"], abs=1e-5)
    if zero == 2:  # under ZeRO-3 the returned module's parameters are partitioned across ranks
        assert got["w_sum"] == pytest.approx(reference["w_sum"], rel=1e-6)


def test_user_config_with_cpu_offload_matches_one_process(reference, tmp_path):
    """A user's DeepSpeed config (``ds_config``) chooses ZeRO-2 and ZeRO-Offload of the optimizer to the host;
    curate's batch sizes, clipping and AdamW still apply, so the weights are those of one process (~25 s)."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2, "contiguous_gradients": False,
                                                        "offload_optimizer": {"device": "cpu"}},
                                  "train_batch_size": "auto"}))
    got = run(tmp_path / "ds.json.out", "file", 2, str(config))
    for source, weight in reference["weights"].items():
        assert got["weights"][source] == pytest.approx(weight, abs=2e-5)
    assert got["target_loss"] == pytest.approx(reference["target_loss"], abs=1e-5)
    assert got["w_sum"] == pytest.approx(reference["w_sum"], rel=1e-6)


def test_cli_launcher_matches_a_single_process_run(tmp_path):
    """`curate reweight --launcher deepspeed --nproc 2 --deepspeed-config ds.yaml` writes one run folder (rank 0)
    with the weights of the single-process run on the same global batch (the file picks ZeRO-2 with offload)."""
    rows = [{"instruction": f"{s} question {i}", "input": "", "output": f"{s} answer {i}"}
            for s in ("math", "code", "chat") for i in range(30)]
    for s in ("math", "code", "chat"):
        (tmp_path / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["instruction"]
                                                     .startswith(s)))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    curate = [sys.executable, "-c", "from curate.cli import main; main()"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*args):
        res = subprocess.run([*curate, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    cli("ingest", "math.jsonl", "code.jsonl", "chat.jsonl", "-q")
    cli("ingest", "val.jsonl", "--split", "val", "-q")
    common = ["--steps", "3", "batch_size=6", "val_batch_size=4", "-q"]
    cli("reweight", *common, "--out", "single")
    (tmp_path / "ds.yaml").write_text("zero_optimization:\n  stage: 2\n  offload_optimizer: {device: cpu}\n")
    res = cli("reweight", "--launcher", "deepspeed", "--deepspeed-config", "ds.yaml", "--nproc", "2", *common,
              "--out", "ds")
    assert res.stdout.count("wrote ds") == 1  # only rank 0 reports and writes
    single = json.loads((tmp_path / "single" / "weights.json").read_text())["sources"]
    ds = json.loads((tmp_path / "ds" / "weights.json").read_text())["sources"]
    assert ds == pytest.approx(single, abs=2e-5)
