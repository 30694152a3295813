"""Ctrl-C on `curate reweight --launcher deepspeed --nproc 2`, as a terminal sends it: SIGINT to the command's
whole process group (the parent and torchrun's agent; the ranks run in sessions of their own and get it from the
agent) once the ranks have written their first checkpoint. The command must exit 130 with curate's one line that
names ``--resume RUN --launcher deepspeed --nproc 2``, printed once and without torchrun's traceback; rank 0 alone
says it is finishing its step; and ``--resume`` must end where the uninterrupted run ends (observed: the same
weights to the last bit, as for the solver-level kill -9 test in tests/solvers/test_scalebio_distributed.py).

The test polls for the checkpoint file instead of sleeping, so a slow machine only makes it slower (each torchrun
job takes 15-40 s on 2 cores); 40 steps leave ~38 steps between the first checkpoint and the end of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and SIGINT are POSIX")]

SOURCES = ("math", "code", "chat")
# SIGINT's handler is set in the command itself: a test runner started in the background ignores SIGINT, and a
# child would inherit that (Python then never raises KeyboardInterrupt); a Python-level handler is reset at exec
CURATE = [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                "from curate.cli import main; main()"]
REWEIGHT = ["reweight", "--launcher", "deepspeed", "--nproc", "2", "--steps", "40", "batch_size=6",
            "val_batch_size=4", "checkpoint_every=2", "-q"]
TIMEOUT_S = 600


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store of three 30-row sources and a 12-row target, in ``tmp_path`` (the commands run there)."""
    rows = [{"instruction": f"{s} question {i}", "input": "", "output": f"{s} answer {i}"}
            for s in SOURCES for i in range(30)]
    for s in SOURCES:
        (tmp_path / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                     if r["instruction"].startswith(s)))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    cli(tmp_path, "ingest", *(f"{s}.jsonl" for s in SOURCES), "-q")
    cli(tmp_path, "ingest", "val.jsonl", "--split", "val", "-q")
    return tmp_path


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """The command in a new session (its own process group, as a terminal's foreground job), output to files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(cwd / "out.txt", "w") as out, open(cwd / "err.txt", "w") as err:
        return subprocess.Popen([*CURATE, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)


def finish(proc: subprocess.Popen, cwd: Path) -> tuple[int, str, str]:
    try:
        code = proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return code, (cwd / "out.txt").read_text(), (cwd / "err.txt").read_text()


def cli(cwd: Path, *args: str) -> str:
    code, out, err = finish(start(cwd, *args), cwd)
    assert code == 0, err[-3000:]
    return out


def weights(run: Path) -> dict[str, float]:
    return json.loads((run / "weights.json").read_text())["sources"]


def test_ctrl_c_on_two_ranks_says_how_to_resume_once_and_the_resume_finishes_the_run(store: Path):
    proc = start(store, *REWEIGHT, "--out", "run")
    checkpoint, deadline = store / "run" / "checkpoints" / "scalebio.pt", time.monotonic() + TIMEOUT_S
    while not checkpoint.exists():  # rank 0 commits it after every rank wrote its shards
        assert proc.poll() is None, (store / "err.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint yet"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code, out, err = finish(proc, store)

    assert code == 130, err[-3000:]
    text = out + err
    assert "Traceback" not in text and "SignalException" not in text, text[-3000:]
    hint = "interrupted: checkpoint in run/checkpoints; continue with `curate reweight --resume run --launcher " \
           "deepspeed --nproc 2`"
    assert hint in err, err[-3000:]
    assert err.count("interrupted:") == 1, err[-3000:]  # the parent's line, not one per rank
    assert err.count("interrupt: finishing this step") == 1, err[-3000:]  # rank 0's, as the ranks stop
    assert err.count("interrupted after step") == 1, err[-3000:]
    assert "closing signal" not in err and "death signal" not in err, err[-3000:]  # torchrun's own notes
    assert not (store / "run" / "weights.json").exists()

    out = cli(store, "reweight", "--resume", "run", "--launcher", "deepspeed", "--nproc", "2", "-q")
    assert out.count("wrote run") == 1
    cli(store, *REWEIGHT, "--out", "whole")
    assert weights(store / "run") == weights(store / "whole")
