"""`curate reweight`: learn per-source weights (or per-example scores) and write a run folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli._common import DEFAULT_DB, ConfigPath, Db, Out, Quiet, Seed, err, guarded, out
from curate.cli.progress import step_progress
from curate.config import load_config
from curate.errors import ConfigError
from curate.ingest.readers import EXTENSIONS
from curate.pipeline import (
    METHODS,
    ReweightOutcome,
    check_deepspeed_config,
    method_config,
    read_deepspeed_config,
    settings_from,
)
from curate.pipeline import reweight as run_reweight
from curate.runs import safe_out_dir


def register(app: typer.Typer) -> None:
    app.command("reweight", context_settings={"allow_extra_args": False})(reweight)


@guarded
def reweight(
    args: Annotated[list[str] | None, typer.Argument(help="Optional data files to ingest first, then key=value "
                                                          "config overrides (e.g. alpha=10 lr_lambda=0.05).")] = None,
    method: Annotated[str | None, typer.Option(help=f"One of: {', '.join(METHODS)}.")] = None,
    target: Annotated[str | None, typer.Option(help="Target: a split (val/test) or a source name.")] = None,
    model: Annotated[str | None, typer.Option(help="'tiny' or a local Hugging Face model folder.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps of the method.")] = None,
    budget: Annotated[int | None, typer.Option(help="Also resample this many rows into RUN/data.")] = None,
    seed: Seed = 0,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted ScaleBiO run folder.")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="One JSON line per step on stderr.")] = False,
    lower_level: Annotated[str | None, typer.Option(
        "--lower-level", help="ScaleBiO's u and w: 'full' (two model copies) or 'lora' (two LoRA adapters "
                              "over one shared base).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print the estimated peak memory of full, LISA and LoRA "
                                                      "ScaleBiO, check it fits, and stop.")] = False,
    max_memory: Annotated[float | None, typer.Option(
        "--max-memory", help="Memory budget in GiB for the --plan check (default: available RAM); a run that "
                             "would not fit is refused before any work.")] = None,
    launcher: Annotated[str, typer.Option(
        "--launcher", help="'none', or 'deepspeed': ScaleBiO with u and w as DeepSpeed ZeRO engines over --nproc "
                           "processes (torchrun; CPU uses gloo). Needs the deepspeed extra.")] = "none",
    zero: Annotated[int | None, typer.Option(
        "--zero", help="ZeRO stage with --launcher deepspeed: 2 or 3 (default: --deepspeed-config's "
                       "zero_optimization.stage, else 2).")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes with --launcher deepspeed.")] = 1,
    deepspeed_config: Annotated[Path | None, typer.Option(
        "--deepspeed-config", help="DeepSpeed config (JSON or YAML) with --launcher deepspeed, for offload and ZeRO "
                                   "settings; curate sets batch sizes, clipping and the optimizer.")] = None,
    config: ConfigPath = None,
    db: Db = DEFAULT_DB,
    out_dir: Out = None,
    quiet: Quiet = False,
) -> None:
    """Learn how much of each source to use for the target, with ScaleBiO or a baseline."""
    files = [a for a in args or [] if "=" not in a]
    overrides = [a for a in args or [] if "=" in a]
    if resume is not None and config is None:
        config = _resumed_config(resume)
    values = load_config(config, overrides)
    values.pop("method_config", None)
    for key, val in (("method", method), ("target", target), ("model", model), ("steps", steps),
                     ("budget", budget), ("lower_level", lower_level)):
        if val is not None:
            values[key] = val
    values.setdefault("seed", seed)
    target_file = _target_file(values.get("target"))
    if target_file is not None:
        values["target"] = "val"
    settings = settings_from(values)
    method_cfg = method_config(settings)  # validate before any work
    if plan or max_memory is not None:
        _check_memory(settings, method_cfg, max_memory, show=plan and not quiet)
        if plan:
            return
    distributed = _check_launcher(launcher, settings.method, resume, bool(files or target_file))
    zero_stage, ds_config = _deepspeed_settings(distributed, zero, nproc, deepspeed_config, method_cfg)
    if zero_stage is not None and "LOCAL_RANK" not in os.environ:  # the parent: start the ranks and wait
        raise typer.Exit(_launch(nproc, safe_out_dir(out_dir, settings.method)))
    if zero_stage is not None and os.environ.get("RANK", "0") != "0":
        quiet = True
    if files or target_file is not None:
        _ingest_first(files, target_file, db, quiet)
    run_dir = resume if resume is not None else safe_out_dir(out_dir, settings.method)
    if zero_stage is not None and os.environ.get("CURATE_RUN_DIR"):
        run_dir = Path(os.environ["CURATE_RUN_DIR"])
    if resume is not None and not (resume / "checkpoints").exists():
        raise ConfigError(f"--resume: {resume} has no checkpoints/; pass a ScaleBiO run folder")
    total = getattr(method_cfg, "steps", None) or getattr(method_cfg, "proxy_steps", None)
    with step_progress(total, settings.method, quiet, json_logs) as on_step:
        outcome = run_reweight(db, settings, run_dir, on_step=on_step, resume=resume is not None,
                               zero_stage=zero_stage, ds_config=ds_config)
    if not outcome.doc:  # a DeepSpeed rank other than 0: rank 0 reports
        return
    diagnostics = outcome.diagnostics if isinstance(outcome.diagnostics, dict) else {}
    if not quiet:
        out.print(summary_table(outcome))
        if diagnostics.get("tokenization"):
            out.print(token_table(diagnostics["tokenization"]))
    for w in diagnostics.get("warnings", []):  # shown even with --quiet: a result the input cannot fully support
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    out.print(f"wrote {outcome.run_dir}")


def _check_launcher(launcher: str, method: str, resume: Path | None, ingest: bool) -> bool:
    """True for ``--launcher deepspeed`` (False for ``none``), after checking it suits the rest of the command."""
    if launcher not in ("none", "deepspeed"):
        raise ConfigError(f"--launcher: {launcher!r} is not one of none, deepspeed")
    if launcher == "none":
        return False
    if method != "scalebio":
        raise ConfigError(f"--launcher deepspeed: runs --method scalebio only, not {method}")
    if resume is not None:
        raise ConfigError("--launcher deepspeed: --resume is not supported (the engine writes no checkpoints)")
    if ingest:
        raise ConfigError("--launcher deepspeed: ingest the data files first (`curate ingest`), then reweight")
    return True


def _deepspeed_settings(deepspeed: bool, zero: int | None, nproc: int, path: Path | None,
                        method_cfg: object) -> tuple[int | None, dict | None]:
    """The ZeRO stage and the user's DeepSpeed config (None, None without the launcher).

    The file is read before deepspeed is looked for (a bad path needs no extras) and checked against curate's
    settings before any rank starts, so a bad file or flag costs one line and no processes.
    """
    if not deepspeed:
        for flag, given in (("--zero", zero is not None), ("--deepspeed-config", path is not None),
                            ("--nproc", nproc != 1)):
            if given:
                raise ConfigError(f"{flag}: needs --launcher deepspeed")
        return None, None
    if nproc < 1:
        raise ConfigError(f"--nproc: must be >= 1, got {nproc}")
    if zero is not None and zero not in (2, 3):
        raise ConfigError(f"--zero: {zero} is not 2 or 3")
    user = read_deepspeed_config(path) if path is not None else None
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("--launcher deepspeed: deepspeed is not installed; pip install 'curate[deepspeed]'")
    return check_deepspeed_config(user, path, method_cfg, nproc, zero), user


def _launch(nproc: int, run_dir: Path) -> int:
    """Re-run this command on ``nproc`` ranks under torchrun (rank 0 writes ``run_dir``); returns its exit code."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the command's arguments travel in the environment: torchrun's own parser would take e.g. --nproc for its own
    env = {**os.environ, "CURATE_RUN_DIR": str(run_dir), "CURATE_RANK_ARGV": json.dumps(sys.argv[1:])}
    try:
        import torch

        if not torch.cuda.is_available():
            env.setdefault("DS_ACCELERATOR", "cpu")
    except ImportError:
        pass
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", "--no-python", sys.executable, "-c",
           "import json, os, sys; sys.argv[1:] = json.loads(os.environ['CURATE_RANK_ARGV']); "
           "from curate.cli import main; main()"]
    return subprocess.run(cmd, env=env).returncode


def _resumed_config(run: Path) -> Path:
    """An interrupted run continues with the settings it was started with (its ``config.yaml``)."""
    path = run / "config.yaml"
    if not path.exists():
        raise ConfigError(f"--resume: {run} has no config.yaml; pass the folder of a `curate reweight` run")
    return path


def _check_memory(settings: object, method_cfg: object, max_memory: float | None, show: bool) -> None:
    """Print the memory plan (``--plan``) and refuse a run that would not fit (exit 2, one line)."""
    from curate.pipeline import memory_plan

    if max_memory is not None and not max_memory > 0:
        raise ConfigError(f"--max-memory: must be > 0 GiB, got {max_memory}")
    lines, error = memory_plan(settings, method_cfg, max_memory)  # type: ignore[arg-type]
    if show:
        for line in lines:
            out.print(line, highlight=False, markup=False)
    if error is not None:
        raise ConfigError(error)


def _target_file(target: object) -> Path | None:
    """``--target val.jsonl``: a data file to ingest as the val split (then the target is ``val``)."""
    if isinstance(target, str) and Path(target).suffix.lower() in EXTENSIONS:
        if not Path(target).exists():
            raise ConfigError(f"--target: {target} does not exist; pass a split, a source or a data file")
        return Path(target)
    return None


def _ingest_first(files: list[str], target_file: Path | None, db: Path, quiet: bool) -> None:
    from curate.cli.ingest import report_table
    from curate.db import open_db
    from curate.ingest import ingest_paths

    with open_db(db) as con:
        reports = ingest_paths(con, [Path(f) for f in files]) if files else []
        if target_file is not None:
            reports += ingest_paths(con, [target_file], split="val")
    if not quiet:
        out.print(report_table(reports, db))


def summary_table(o: ReweightOutcome) -> Table:
    """Weights per source, with the averaged weights and diagnostics when the method has them."""
    t = Table(title=f"{o.method} weights ({o.seconds:.1f}s)")
    t.add_column("source", overflow="fold")
    t.add_column("weight", justify="right")
    averaged = o.doc.get("averaged") or {}
    if averaged:
        t.add_column("averaged", justify="right")
    t.add_column("rows", justify="right")
    for s, w in sorted(o.weights.items(), key=lambda kv: -kv[1]):
        cells = [s, f"{w:.4f}"] + ([f"{averaged.get(s, 0):.4f}"] if averaged else []) + [
            f"{o.doc['counts'].get(s, 0):,}"]
        t.add_row(*cells)
    d = o.diagnostics if isinstance(o.diagnostics, dict) else {}
    if "effective_sources" in d:
        t.caption = (f"entropy {d['entropy']:.3f} nats, effective sources {d['effective_sources']:.2f}, "
                     f"|final - averaged|_1 = {d['l1_final_vs_averaged']:.3f}")
    return t


def token_table(report: dict) -> Table:
    """Per source and for the target: rows, how many were truncated or lost every label token, token lengths."""
    t = Table(title=f"tokenization: max_len {report['max_len']} ({report['chosen']}), "
                    f"truncation={report['truncation']}")
    t.add_column("", overflow="fold")
    for col in ("rows", "truncated", "left out", "median len", "p95 len"):
        t.add_column(col, justify="right", no_wrap=True)
    t.caption = "left out: rows with no response token left after truncation (excluded from every loss)"
    rows = [*sorted(report["sources"].items()), ("target", report["target"])]
    for name, st in rows:
        lost = f"{st['no_labels']:,}" + (f" ({st['no_labels'] / st['rows']:.1%})" if st["no_labels"] else "")
        t.add_row(name, f"{st['rows']:,}", f"{st['truncated']:,}", lost, f"{st['median_len']:.0f}",
                  f"{st['p95_len']:.0f}")
    return t
