"""`curate reweight`: learn per-source weights (or per-example scores) and write a run folder.

The command parses its options into a :class:`curate.pipeline.ReweightRequest` and prints; every stage it calls
(prepare, plan, launch, ingest, reweight) lives in the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate import launch, methods
from curate.cli._common import ConfigPath, JsonLogs, Out, Quiet, Seed, err, guarded, out
from curate.cli.progress import step_progress
from curate.cli.resample import allocation_table, print_warnings
from curate.errors import ConfigError
from curate.pipeline import ReweightOutcome, ReweightRequest, ingest_first, prepare
from curate.pipeline import reweight as run_reweight
from curate.sampling import parse_max_epochs

METHOD_KEYS = ("Method keys: flat (steps=300) or under the method's name (scalebio.steps=300, rho.reference_steps=50;"
               " `compare` needs the second). `--steps` sets: " + ", ".join(
                   f"{m.name}.{m.step_key}" for m in methods.METHODS.values() if m.step_key) + ".")


def register(app: typer.Typer) -> None:
    app.command("reweight", context_settings={"allow_extra_args": False}, epilog=METHOD_KEYS)(reweight)


@guarded
def reweight(
    args: Annotated[list[str] | None, typer.Argument(help="Optional data files to ingest first, then key=value "
                                                          "config overrides (e.g. alpha=10 lr_lambda=0.05).")] = None,
    method: Annotated[str | None, typer.Option(help=f"One of: {', '.join(methods.names())}.")] = None,
    target: Annotated[str | None, typer.Option(help="Target: a split (val/test) or a source name.")] = None,
    model: Annotated[str | None, typer.Option(help="'tiny' or a local Hugging Face model folder.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps of the method (see the keys below).")] = None,
    budget: Annotated[int | None, typer.Option(help="Also resample this many rows into RUN/data.")] = None,
    max_epochs: Annotated[str | None, typer.Option(
        "--max-epochs", metavar="E|none", help="With --budget: at most E passes over any one source (default 4), "
                                               "the surplus going to the others; 'none': no cap.")] = None,
    seed: Seed = 0,
    resume: Annotated[Path | None, typer.Option(
        help="Continue an interrupted ScaleBiO, LESS or RHO run folder.")] = None,
    json_logs: JsonLogs = False,
    lower_level: Annotated[str | None, typer.Option(
        "--lower-level", help="ScaleBiO's u and w: 'full' (two model copies) or 'lora' (two LoRA adapters "
                              "over one shared base).")] = None,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Weigh the groups of a `curate cluster` grouping (source/cNN) instead of whole "
                           "sources; weights.json keeps per-source sums.")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print the method's estimated peak memory (ScaleBiO: "
                                                      "full, LISA and LoRA), check it fits, and stop.")] = False,
    max_memory: Annotated[float | None, typer.Option(
        "--max-memory", help="Memory budget in GiB for the --plan check (default: available RAM); a run that "
                             "would not fit is refused before any work.")] = None,
    launcher: Annotated[str, typer.Option(
        "--launcher", help="'none', or 'deepspeed': ScaleBiO with u and w as DeepSpeed ZeRO engines over --nproc "
                           "processes (torchrun; CPU uses gloo; needs the deepspeed extra), or LESS with its "
                           "gradient features shared out over --nproc gloo ranks.")] = "none",
    zero: Annotated[int | None, typer.Option(
        "--zero", help="ZeRO stage with --launcher deepspeed: 2 or 3 (default: --deepspeed-config's "
                       "zero_optimization.stage, else 2).")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes with --launcher deepspeed.")] = 1,
    deepspeed_config: Annotated[Path | None, typer.Option(
        "--deepspeed-config", help="DeepSpeed config (JSON or YAML) with --launcher deepspeed, for offload and ZeRO "
                                   "settings; curate sets batch sizes, clipping and the optimizer.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out folder whole (without "
                                                                "it such a folder is refused).")] = False,
    config: ConfigPath = None,
    db: Annotated[Path | None, typer.Option("--db", envvar="CURATE_DB", help=(
        "DuckDB file (default: curate.duckdb; with --resume, the store the run was made from)."))] = None,
    out_dir: Out = None,
    quiet: Quiet = False,
) -> None:
    """Learn how much of each source to use for the target, with ScaleBiO or a baseline."""
    flags = {"method": method, "target": target, "model": model, "steps": steps, "budget": budget,
             "max_epochs": _max_epochs_flag(max_epochs), "lower_level": lower_level, "group_by": group_by}
    job = prepare(ReweightRequest(db, tuple(args or ()), config, flags, seed, resume, out_dir, launcher, zero, nproc,
                                  deepspeed_config, overwrite))
    if plan or max_memory is not None:
        from curate.plan import memory_plan

        lines, error = memory_plan(job.settings, job.cfg, max_memory)
        for line in lines if plan and not quiet else []:
            out.print(line, highlight=False, markup=False)
        if error is not None:
            raise ConfigError(error)
        if plan:
            return
    if job.launch.is_parent:  # start the ranks and wait for them
        raise typer.Exit(launch.spawn(job.launch.nproc, job.run.root))
    quiet, json_logs = quiet or not job.launch.rank.writer, json_logs and job.launch.rank.writer  # rank 0 reports
    if job.files or job.target_file is not None:
        from curate.cli.ingest import report_table

        reports = ingest_first(job)
        if not quiet:
            out.print(report_table(reports, job.db))
    with step_progress(job.total_steps, job.settings.method, quiet, json_logs) as on_step:
        outcome = run_reweight(job, on_step=on_step)
    if outcome is not None:  # None on the ranks other than 0: rank 0 reports
        print_outcome(outcome, quiet)


def _max_epochs_flag(value: str | None) -> float | str | None:
    """``--max-epochs`` checked now (one line naming the flag); ``none`` stays a word, since ``None`` here means
    "not given" and the config's value (default 4) then applies."""
    if value is None:
        return None
    epochs = parse_max_epochs(value)
    return "none" if epochs is None else epochs


def print_outcome(outcome: ReweightOutcome, quiet: bool) -> None:
    """The weights and tokenization tables (and, with --budget, the allocation), then warnings (shown even with
    --quiet: a result the input cannot fully support, a source the epoch cap cut), then the run folder."""
    diagnostics = outcome.diagnostics if isinstance(outcome.diagnostics, dict) else {}
    if not quiet:
        out.print(summary_table(outcome))
        if outcome.doc.get("groups"):
            out.print(groups_table(outcome.doc))
        if diagnostics.get("tokenization"):
            out.print(token_table(diagnostics["tokenization"]))
        if outcome.resampled is not None:
            out.print(allocation_table(outcome.resampled))
    for w in diagnostics.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if outcome.resampled is not None:
        print_warnings(outcome.resampled.warnings)
    out.print(f"wrote {outcome.run_dir}")


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


GROUP_ROWS = 20
"""Groups shown in the summary (the heaviest first); weights.json has them all."""


def groups_table(doc: dict) -> Table:
    """``--group-by``: the heaviest groups with their weight, rows and share of their source's weight."""
    groups, counts, owner = doc["groups"], doc.get("group_counts", {}), doc.get("group_sources", {})
    t = Table(title=f"groups of {doc.get('group_by')!r} ({len(groups)}; the {min(GROUP_ROWS, len(groups))} "
                    "heaviest)")
    for col, just in (("group", "left"), ("weight", "right"), ("rows", "right"), ("of its source", "right")):
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for g, w in sorted(groups.items(), key=lambda kv: -kv[1])[:GROUP_ROWS]:
        total = doc["sources"].get(owner.get(g, g), 0.0)
        t.add_row(g, f"{w:.4f}", f"{counts.get(g, 0):,}", f"{w / total:.0%}" if total else "-")
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
