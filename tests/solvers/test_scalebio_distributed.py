"""DeepSpeed engine (solvers/distributed.py): two CPU processes under torchrun, each training on half of every
global batch, must reach the single-process run's weights with the same global batch, for the full lower level,
LISA (blocks leave, stay and return, so AdamW moments are carried over and dropped across engine rebuilds), the
LoRA shared base and two α stages (LISA also under ZeRO-3, whose rebuilds keep the module partitioned); and a
2-process run killed with SIGKILL mid-way and resumed must end exactly where the uninterrupted 2-process run ends
(ZeRO-2, and LISA under ZeRO-3).

Tolerance: the runs differ only in floating-point summation order (per-rank partial sums, all-reduce, ZeRO's
flattened gradient buffers), so the weights agree to 1e-5 absolute (observed: full 5e-7, LISA 8e-7, LISA under
ZeRO-3 5.4e-7, LoRA 3e-7, stages 4.3e-6) and the per-step target losses to 1e-5, also with a user DeepSpeed config
that offloads the optimizer to the host (ZeRO-Offload works with ``DS_ACCELERATOR=cpu``). A resumed run repeats
the same operations in the same order as the uninterrupted one, so there the results are equal (observed:
bit-identical).

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


def launch(out: Path, mode: str, nproc: int = 1, *extra: str, variant: str = "full",
           expect: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    if mode == "ref":
        cmd = [sys.executable, str(WORKER), str(out), variant, mode, *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(WORKER), str(out), variant, mode, *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (res.returncode == 0) == (expect == 0), res.stderr[-3000:]
    return res


def run(out: Path, mode: str, nproc: int = 1, *extra: str, variant: str = "full") -> dict:
    launch(out, mode, nproc, *extra, variant=variant)
    return json.loads(out.read_text())


def assert_same(got: dict, want: dict, abs_tol: float = 1e-5) -> None:
    for source, weight in want["weights"].items():
        assert got["weights"][source] == pytest.approx(weight, abs=abs_tol)
    assert got["target_loss"] == pytest.approx(want["target_loss"], abs=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref") / "ref.json", "ref")


@pytest.mark.parametrize("zero", [2, 3])
def test_two_ranks_match_one_process(reference, tmp_path, zero):
    got = run(tmp_path / "ds.json", str(zero), nproc=2)
    for source, weight in reference["weights"].items():
        assert got["weights"][source] == pytest.approx(weight, abs=2e-5)
    assert got["target_loss"] == pytest.approx(reference["target_loss"], abs=1e-5)
    assert got["w_sum"] == pytest.approx(reference["w_sum"], rel=1e-6)  # ZeRO-3: gathered from the ranks


def test_user_config_with_cpu_offload_matches_one_process(reference, tmp_path):
    """A user's DeepSpeed config (``ds_config``) chooses ZeRO-2 and ZeRO-Offload of the optimizer to the host;
    curate's batch sizes, clipping and AdamW still apply, so the weights are those of one process (~25 s)."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2, "contiguous_gradients": False,
                                                        "offload_optimizer": {"device": "cpu"}},
                                  "train_batch_size": "auto"}))
    got = run(tmp_path / "ds.json.out", "file", 2, "--ds-config", str(config))
    for source, weight in reference["weights"].items():
        assert got["weights"][source] == pytest.approx(weight, abs=2e-5)
    assert got["target_loss"] == pytest.approx(reference["target_loss"], abs=1e-5)
    assert got["w_sum"] == pytest.approx(reference["w_sum"], rel=1e-6)


@pytest.mark.parametrize(("variant", "zero"), [("lisa", 2), ("lora", 2), ("stages", 2), ("lisa", 3)])
def test_lisa_lora_and_stages_on_two_ranks_match_one_process(tmp_path, variant, zero):
    """The same step on 2 ranks: LISA over 3 blocks (1 active, redrawn every 2 steps, 8 steps), LoRA adapters over
    one shared base, and α doubling after step 3 (engines rebuilt, moments reset, w's clipping follows α). LISA
    also under ZeRO-3, where every rebuild takes over the partitioned module of the engine it replaces."""
    want = run(tmp_path / "ref.json", "ref", variant=variant)
    got = run(tmp_path / "ds.json", str(zero), 2, variant=variant)
    assert_same(got, want)
    assert got["grad_norm_w"] == pytest.approx(want["grad_norm_w"], rel=1e-5)
    assert got["engines_alive"] == 2  # a rebuild (LISA draw, new stage) frees the engines it replaces
    if variant != "lora":  # under LoRA the engine's module is an adapter view; its sum is checked by the weights
        assert got["w_sum"] == pytest.approx(want["w_sum"], rel=1e-6)


@pytest.mark.parametrize(("variant", "zero"), [("lisa", 2), ("stages", 2), ("lisa", 3)])
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_result(tmp_path, variant, zero):
    """SIGKILL rank 0 after step 5 (the checkpoint of step 4 is on disk: DeepSpeed's shards and scalebio.pt);
    `resume` from it must end exactly where the uninterrupted run ends (LISA: the resumed run rebuilds its
    engines over the saved draw and parameter groups, then redraws at step 6; under ZeRO-3 the frozen blocks'
    weights come back from each rank's shard of them)."""
    mode = str(zero)
    whole = run(tmp_path / "whole.json", mode, 2, "--ckpt", str(tmp_path / "a"), variant=variant)
    ckpt = tmp_path / "b"
    launch(tmp_path / "killed.json", mode, 2, "--ckpt", str(ckpt), "--kill-at", "5", variant=variant, expect=1)
    assert not (tmp_path / "killed.json").exists()
    assert [p.name for p in (ckpt / "deepspeed" / "u").iterdir() if p.is_dir()] == ["step4"]
    resumed = run(tmp_path / "resumed.json", mode, 2, "--ckpt", str(ckpt), "--resume", variant=variant)
    assert resumed["weights"] == whole["weights"]
    assert resumed["target_loss"] == whole["target_loss"]
    assert resumed["w_sum"] == whole["w_sum"]


def test_lisa_under_zero0_is_refused_with_the_fix(tmp_path):
    res = launch(tmp_path / "x.json", "0", 1, variant="lisa", expect=1)
    assert "LISA under ZeRO-0 (use --zero 2)" in res.stderr


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
              "--out", "ds", "--json-logs")
    assert res.stdout.count("wrote ds") == 1  # only rank 0 reports, writes and logs its steps
    records = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert len([r for r in records if "step" in r and "level" not in r]) == 3, res.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "weights.json").read_text())["sources"]
    ds = json.loads((tmp_path / "ds" / "weights.json").read_text())["sources"]
    assert ds == pytest.approx(single, abs=2e-5)


def test_zero3_sizes_follow_the_model_unless_the_user_sets_them():
    """Under ZeRO-3 the engine sizes DeepSpeed's buckets from the model's hidden size; a user's value, in either
    of DeepSpeed's spellings, wins, and ZeRO-2 is left to DeepSpeed."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from solvers.distributed import engine_config, zero3_defaults

    kw = {"micro_batch": 2, "world": 2, "grad_clip": 1.0, "hidden": 512}
    got = engine_config(None, zero_stage=3, **kw)["zero_optimization"]
    assert got == {"stage": 3, **zero3_defaults(512)} and got["reduce_bucket_size"] == 512**2
    user = {"zero_optimization": {"stage": 3, "prefetch_bucket_size": 7, "stage3_max_reuse_distance": 8}}
    parsed = DeepSpeedZeroConfig(**engine_config(user, **kw)["zero_optimization"])
    assert (parsed.prefetch_bucket_size, parsed.max_reuse_distance, parsed.param_persistence_threshold) == (7, 8, 5120)
    assert engine_config(None, zero_stage=2, **kw)["zero_optimization"] == {"stage": 2}
    assert engine_config(None, zero_stage=3, **{**kw, "hidden": None})["zero_optimization"] == {"stage": 3}
