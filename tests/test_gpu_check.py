"""``scripts/gpu_check.sh``: on a machine without a CUDA GPU it refuses in one line with exit 2 and writes nothing;
its summary turns the step table and the steps' outputs into ``gpu_check.json``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run, not refuse")
def test_a_cpu_machine_gets_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out"
    res = _run(str(out))
    assert res.returncode == 2, res
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res
    assert res.stderr.startswith("gpu_check: torch sees no CUDA GPU here"), res.stderr
    assert not out.exists()  # refused before anything was written


def test_no_out_folder_is_a_usage_line():
    res = _run()
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "gpu_check: usage: scripts/gpu_check.sh OUT (a folder for gpu_check.json and the logs)"], res


def _helper():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_keeps_every_number_and_every_failure(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "host.json").write_text(json.dumps({"gpu": "H100"}))
    (tmp_path / "steps.tsv").write_text("pytest_gpu\tok\t0\t61.5\t150\t\n"
                                        "bench_solver\ttimeout\t124\t75.0\t75\tstopped after its 75s limit\n"
                                        "compare\tskipped\t-1\t0\t0\tneeds smollm2/config.json\n")
    (tmp_path / "pytest_gpu.xml").write_text(
        '<testsuites><testsuite tests="12" failures="1" errors="0" skipped="2" time="61.2">'
        '<testcase classname="tests.solvers.test_gpu" name="test_a"><failure message="x"/></testcase>'
        "</testsuite></testsuites>")
    (tmp_path / "logs" / "bench_solver.log").write_text('report\n{"variants": {"scalebio": {"steps_per_s": 5.0}}}\n'
                                                        "Terminated\n")
    assert _helper().summarize(tmp_path) == 1  # a step did not pass
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["ok"] is False and doc["host"] == {"gpu": "H100"} and doc["total_s"] == 136.5
    assert doc["results"]["pytest_gpu"]["passed"] == 9
    assert doc["results"]["pytest_gpu"]["failed_tests"] == ["tests.solvers.test_gpu::test_a"]
    assert doc["results"]["bench_solver"]["variants"]["scalebio"]["steps_per_s"] == 5.0
    assert doc["steps"]["bench_solver"]["status"] == "timeout" and doc["steps"]["bench_solver"]["tail"]
    assert doc["steps"]["compare"]["note"] == "needs smollm2/config.json"
