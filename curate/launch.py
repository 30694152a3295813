"""Where a run executes: the device, the process launcher and this process's rank. The only module that reads
torchrun's environment or starts processes.

``--launcher deepspeed --nproc N`` re-runs the same command on N ranks under torchrun: the parent checks
everything first (a bad flag or DeepSpeed file costs one line and no processes), picks the run folder and waits;
every rank trains; rank 0 alone writes the run folder and the database. ScaleBiO's ranks run DeepSpeed ZeRO
engines; a method that shards its pool (LESS: ``Method.shards_pool``) runs no engine: its ranks join a gloo
group (:func:`join_ranks`), each scores a share of the pool, and they may resume a killed run (each rank stores
its own finished chunks in ``RUN/checkpoints``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, Interrupted

LAUNCHERS = ("none", "deepspeed")
_RUN_DIR_ENV = "CURATE_RUN_DIR"
_ARGV_ENV = "CURATE_RANK_ARGV"
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rank:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local: int = 0
    """``LOCAL_RANK``: which of this machine's GPUs the rank uses."""
    in_job: bool = False
    """Started by torchrun (``LOCAL_RANK`` set)."""
    run_dir: Path | None = None
    """The run folder the launching parent chose (every rank writes or reads the same one)."""

    @property
    def writer(self) -> bool:
        """Only rank 0 writes files, the database and the summary."""
        return self.rank == 0

    @property
    def launched(self) -> bool:
        """A rank that ``--launcher`` started: the launching command reports how the job ended, once."""
        return self.in_job and self.run_dir is not None


def current_rank() -> Rank:
    """Read torchrun's environment once."""
    env = os.environ
    run_dir = env.get(_RUN_DIR_ENV)
    return Rank(rank=int(env.get("RANK", "0")), world=int(env.get("WORLD_SIZE", "1")),
                local=int(env.get("LOCAL_RANK", "0")), in_job="LOCAL_RANK" in env,
                run_dir=Path(run_dir) if run_dir else None)


def join_ranks() -> Rank:
    """On a rank of a job whose method shards its pool: join torchrun's process group over gloo (what the ranks
    exchange is small and goes through the host, on GPUs too); outside a job nothing. This process's rank."""
    rank = current_rank()
    if rank.in_job and rank.world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
    return rank


def leave_ranks() -> None:
    """Wait for every rank, then leave the process group :func:`join_ranks` joined (no rank exits while another
    still talks to it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_device(device: str, rank: Rank) -> str:
    """A plain ``cuda`` on rank ``r`` of a multi-rank job means the machine's GPU ``LOCAL_RANK`` (when there is
    one); any other device is kept."""
    if device != "cuda" or rank.world == 1:
        return device
    import torch

    return f"cuda:{rank.local}" if rank.local < torch.cuda.device_count() else device


@dataclass(frozen=True)
class Launch:
    """How ``curate reweight`` runs: in this process, or as ranks of a DeepSpeed job."""

    launcher: str = "none"
    nproc: int = 1
    zero_stage: int | None = None
    ds_config: dict[str, Any] | None = None
    rank: Rank = Rank()

    @property
    def distributed(self) -> bool:
        """Run as ranks under torchrun (ScaleBiO's ZeRO engines, or a method that shards its pool)."""
        return self.launcher != "none"

    @property
    def is_parent(self) -> bool:
        """The process the user started, which launches the ranks and waits for them."""
        return self.distributed and not self.rank.in_job


def check_device(device: str) -> None:
    """Refuse a ``device=`` that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (before anything runs)."""
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; an explicit GPU must exist."""
    if device == "cpu":
        return device
    try:
        import torch
    except ImportError:
        if device == "auto":
            return "cpu"
        raise ConfigError(f"device={device}: torch is not installed; pip install 'curate[train]'") from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device}: torch sees no GPU here; use device=cpu (or install a CUDA build of torch)")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={device}: only {torch.cuda.device_count()} GPU(s) visible; use cuda:0")
    return device


def plan_launch(launcher: str, *, method: Any, cfg: Any, resume: bool, ingest: bool, zero: int | None, nproc: int,
                ds_config_path: Path | None) -> Launch:
    """Check ``--launcher`` and its flags against the method and the rest of the command.

    ``method`` is the registry entry (:class:`curate.methods.Method`). The DeepSpeed file is read before deepspeed
    is looked for (a bad path needs no extras) and checked against curate's settings before any rank starts.

    Raises:
        ConfigError: naming the flag and the fix.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if launcher == "none":
        for flag, given in (("--zero", zero is not None), ("--deepspeed-config", ds_config_path is not None),
                            ("--nproc", nproc != 1)):
            if given:
                raise ConfigError(f"{flag}: needs --launcher deepspeed")
        return Launch(rank=current_rank())
    if not method.distributed:
        from curate.methods import METHODS

        able = sorted(m.name for m in METHODS.values() if m.distributed)
        raise ConfigError(f"--launcher deepspeed: runs --method {' or '.join(able)} only, not {method.name}")
    if ingest:
        raise ConfigError("--launcher deepspeed: ingest the data files first (`curate ingest`), then reweight")
    if nproc < 1:
        raise ConfigError(f"--nproc: must be >= 1, got {nproc}")
    if method.shards_pool:  # no engine: the ranks share the pool over gloo
        for flag, given in (("--zero", zero is not None), ("--deepspeed-config", ds_config_path is not None)):
            if given:
                raise ConfigError(f"{flag}: {method.name} runs no DeepSpeed engine (each rank scores a share of "
                                  "the pool); drop it")
        return Launch(launcher, nproc, rank=current_rank())
    if zero is not None and zero not in (2, 3):
        raise ConfigError(f"--zero: {zero} is not 2 or 3")
    user = read_deepspeed_config(ds_config_path) if ds_config_path is not None else None
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("--launcher deepspeed: deepspeed is not installed; pip install 'curate[deepspeed]'")
    stage = check_deepspeed_config(user, ds_config_path, cfg, nproc, zero)
    return Launch(launcher, nproc, stage, user, current_rank())


def read_deepspeed_config(path: Path) -> dict[str, Any]:
    """``--deepspeed-config``: a DeepSpeed config file (``.json`` as JSON, anything else as YAML), read here
    without importing deepspeed so that a bad file is reported before any rank starts."""
    import yaml

    where = f"--deepspeed-config: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({e.strerror or e}); pass a DeepSpeed JSON or YAML file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"{where} is not valid {kind} ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of DeepSpeed keys (e.g. zero_optimization)")
    return data


def check_deepspeed_config(user: dict[str, Any] | None, path: Path | None, cfg: Any, nproc: int,
                           zero: int | None) -> int:
    """The ZeRO stage to run (``--zero``, else the file's ``zero_optimization.stage``, else 2), after building
    an engine config once, so that a key curate owns is refused in the parent, naming the file and key."""
    from solvers.distributed import engine_config, zero_stage_of

    where = f"--deepspeed-config: {path}: " if path is not None else "--zero: "
    try:
        stage = zero_stage_of(user, zero)
        if stage not in (2, 3):
            raise ValueError(f"ZeRO stage {stage} is not 2 or 3 (zero_optimization.stage or --zero)")
        lisa = getattr(cfg, "lisa", False)
        for bad, what in ((getattr(cfg, "lower_level", "full") == "lora" and stage == 3,
                           "lower_level=lora under ZeRO-3 (the shared base would be partitioned twice; use --zero 2)"),
                          (lisa and not getattr(cfg, "lisa_release_state", True),
                           "lisa_release_state=false (each LISA draw rebuilds the engines; drop the setting)")):
            if bad:
                raise ValueError(f"the DeepSpeed engine does not support {what}")
        engine_config(user, micro_batch=math.ceil(cfg.batch_size / nproc), world=nproc, grad_clip=cfg.grad_clip,
                      zero_stage=stage)
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    return stage


SHUTDOWN_TIMEOUT_S = 300
"""How long torchrun's agent waits, after a Ctrl-C, for the ranks to finish their step and save a checkpoint
before it kills them (torchrun's own default is 30 s; ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` overrides it)."""

_AGENT_NOTES = ("death signal", "closing signal")
"""What torchrun's agent logs as it passes a Ctrl-C on to the ranks (curate's parent says what happened)."""

NOTICE_S = 15.0
"""After a Ctrl-C, how long the parent waits for the ranks in silence before it says it is still waiting."""


def _quiet_on_ctrl_c(body: str) -> str:
    """``python -c`` code that runs ``body`` and exits 130 without a traceback on a Ctrl-C that comes while the
    process still imports (before torchrun's or curate's own handling)."""
    return f"import sys\ntry:\n    {body}\nexcept KeyboardInterrupt:\n    sys.exit({Interrupted.exit_code})\n"


_AGENT_MAIN = _quiet_on_ctrl_c("from curate.launch import run_agent; run_agent()")
_RANK_MAIN = _quiet_on_ctrl_c(f"import json, os; sys.argv[1:] = json.loads(os.environ['{_ARGV_ENV}']); "
                              "from curate.cli import main; main()")
"""What torchrun's agent and each rank run (``python -c``): the rank runs this command, with its arguments from
the environment."""


def spawn(nproc: int, run_dir: Path) -> int:
    """Re-run this command on ``nproc`` ranks under torchrun (rank 0 writes ``run_dir``); its exit code.

    A Ctrl-C reaches this process and torchrun's agent (the ranks run in sessions of their own); the agent passes
    it on to every rank, which finishes its step and saves a checkpoint, and exits without a traceback
    (:func:`run_agent`); this process then prints the one line that says how to go on. A second Ctrl-C stops the
    ranks at once (the agent terminates them), a third stops the agent.

    Raises:
        Interrupted: after a Ctrl-C, once torchrun has exited.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the command's arguments travel in the environment: torchrun's own parser would take e.g. --nproc for its own
    env = {**os.environ, _RUN_DIR_ENV: str(run_dir), _ARGV_ENV: json.dumps(sys.argv[1:])}
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    try:
        import torch

        if not torch.cuda.is_available():
            env.setdefault("DS_ACCELERATOR", "cpu")
    except ImportError:
        pass
    cmd = [sys.executable, "-c", _AGENT_MAIN, f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port}", "--no-python", sys.executable, "-c", _RANK_MAIN]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _wait_interrupted(proc)
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        raise Interrupted(f"stopped before the ranks wrote a checkpoint ({checkpoints} is empty); start the "
                          f"run again")
    raise Interrupted(f"checkpoint in {checkpoints}; continue with `curate reweight --resume {run_dir} "
                      f"--launcher deepspeed --nproc {nproc}`")


def _wait_interrupted(proc: subprocess.Popen[bytes]) -> None:
    """Wait for torchrun after the Ctrl-C that reached it too (saying so after :data:`NOTICE_S`): through a second
    Ctrl-C (the agent terminates the ranks), killing it at a third."""
    presses = 1
    timeout: float | None = NOTICE_S
    while True:
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            log.warning("waiting for the ranks to finish their step and save a checkpoint (Ctrl-C again to stop "
                        "them at once)")
        except KeyboardInterrupt:
            presses += 1
            if presses == 3:
                proc.kill()
                proc.wait()
                return
        timeout = None


def run_agent() -> None:
    """``python -m torch.distributed.run`` with the arguments of this process, but a Ctrl-C (or another signal
    torchrun handles) ends it with exit code 128 + the signal's number and no traceback of its own, once it has
    passed the signal on to the ranks and waited for them. The ranks' own output and any failure report are
    torchrun's as ever."""
    import signal

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.run import main

    def not_a_note(record: logging.LogRecord) -> bool:
        return not any(note in str(record.msg) for note in _AGENT_NOTES)

    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).addFilter(not_a_note)
    try:
        main(sys.argv[1:])
    except SignalException as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks are stopped; a further Ctrl-C changes nothing
        sys.exit(128 + int(e.sigval))
