"""Rich progress bars: a training loop's (step, ETA, tokens/s, target loss, heaviest sources) and compare's
(cells done, elapsed, ETA, the current arm's stage and its steps).

With ``--quiet`` nothing is drawn; with ``--json-logs`` each step is one JSON line on stderr instead; when stderr
is not a terminal (a log file, CI) a plain line is written every tenth of the run instead of a bar.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from curate.cli._common import err


def _describe(row: dict[str, Any]) -> str:
    parts = []
    if "tokens_per_s" in row:
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    loss = row.get("target_loss", row.get("loss"))
    if isinstance(loss, float) and math.isfinite(loss):
        parts.append(f"target {loss:.3f}")
    p = {k[2:]: v for k, v in row.items() if k.startswith("p_") and isinstance(v, float)}
    if p:
        top = sorted(p.items(), key=lambda kv: -kv[1])[:3]
        parts.append(" ".join(f"{s}={w:.2f}" for s, w in top))
    if "stage" in row:  # ScaleBiO numbers its α stages; the baselines name theirs (rho_reference, ...)
        stage = row["stage"]
        parts.insert(0, f"stage {stage}" if isinstance(stage, int) else str(stage))
    return "  ".join(parts)


def _json_line(record: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(record, default=str) + "\n")


def _plain(quiet: bool, json_logs: bool) -> Any:
    """The callback when nothing is drawn: one JSON line per record (``--json-logs``), nothing (``--quiet``), or
    None when a bar or plain lines should be shown."""
    if json_logs:
        return _json_line
    return (lambda record: None) if quiet else None


@contextmanager
def step_progress(total: int | None, label: str, quiet: bool, json_logs: bool) -> Iterator[Any]:
    """Yield an ``on_step(row)`` callback that advances a bar (or logs JSON lines)."""
    if (plain := _plain(quiet, json_logs)) is not None:
        yield plain
        return
    if not err.is_terminal:  # a log file or a pipe: a line every tenth of the way, never a bar's remnants
        every = max(1, (total or 100) // 10)
        seen = {"n": 0}

        def line(row: dict[str, Any]) -> None:
            seen["n"] += 1
            if seen["n"] % every == 0 or seen["n"] == total:
                of = f"/{total}" if total else ""
                err.print(f"{label}: step {seen['n']}{of}  {_describe(row)}", highlight=False, markup=False)

        yield line
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=err, transient=False) as bar:
        task = bar.add_task(label, total=total, info="")
        seen = {"n": 0}

        def advance(row: dict[str, Any]) -> None:
            seen["n"] += 1
            bar.update(task, completed=seen["n"] if total is None or seen["n"] <= total else total,
                       info=_describe(row))

        yield advance


@contextmanager
def compare_progress(quiet: bool, json_logs: bool) -> Iterator[Any]:
    """Yield an ``on_event(event)`` callback for :func:`curate.compare.compare`: one bar over the (arm, seed)
    cells with elapsed time and ETA, one over the current stage's steps, and a line per finished cell."""
    if (plain := _plain(quiet, json_logs)) is not None:
        yield plain
        return
    state: dict[str, Any] = {"n": 0, "total": 0, "cell": ""}
    if not err.is_terminal:
        yield lambda event: _compare_line(state, event)
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=err, transient=False) as bar:
        cells = bar.add_task("compare", total=None, info="")
        stage = bar.add_task("", total=None, info="", visible=False)
        yield lambda event: _compare_bar(bar, cells, stage, state, event)


def _done_text(state: dict[str, Any], event: dict[str, Any]) -> str:
    wall = event.get("wall_s")
    what = {"cached": "reused (finished earlier under the same settings)", "failed": "FAILED (see the summary)"}.get(
        event["status"], f"done in {wall:.0f} s" if wall is not None else "done")
    return f"compare {state['n']}/{state['total']}: seed {event['seed']} {event['arm']} {what}"


def _compare_line(state: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "start":
        state["total"] = event["total"]
    elif kind == "cell":
        state["cell"] = f"seed {event['seed']} {event['arm']}"
    elif kind == "phase":
        steps = f" ({event['total']} steps)" if event.get("total") else ""
        err.print(f"  {state['cell']}: {event['phase']}{steps}", highlight=False, markup=False)
    elif kind == "done":
        state["n"] += 1
        err.print(_done_text(state, event), highlight=False, markup=False)


def _compare_bar(bar: Progress, cells: Any, stage: Any, state: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "start":
        state["total"] = event["total"]
        bar.update(cells, total=event["total"])
    elif kind == "cell":
        state["cell"] = f"seed {event['seed']} · {event['arm']}"
        bar.update(cells, info=state["cell"])
    elif kind == "phase":
        bar.reset(stage, total=event.get("total"), description=f"  {event['phase']}", info="", visible=True)
        bar.update(cells, info=f"{state['cell']} · {event['phase']}")
    elif kind == "step":
        bar.update(stage, advance=1, info=_describe(event))
    elif kind == "done":
        state["n"] += 1
        bar.update(cells, completed=state["n"])
        bar.update(stage, visible=False)
        bar.console.print(_done_text(state, event), highlight=False, markup=False)
