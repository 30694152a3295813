"""PNG plots for the comparison report, returned as bytes.

Figures are built with matplotlib's object API on the Agg canvas, never through ``pyplot``: no global backend
switch, no open-figure registry to leak, and it works on a machine with no display. Each plot returns PNG
bytes so the report can both save them and embed them in the HTML. PNG metadata is stripped of the matplotlib
version so the same summary gives the same bytes.

Colours are fixed per method across every plot (the baseline is always the first, grey).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_BASELINE_COLOUR = "#8c8c8c"
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
_COST_LABELS = {"wall_s": "wall time (s)", "tokens": "training tokens"}


def method_colours(summary: Mapping[str, Any]) -> dict[str, str]:
    """Colour per method, stable across plots: grey for the baseline, the palette in table order otherwise."""
    colours: dict[str, str] = {}
    others = [m for m in summary["methods"] if m != summary["baseline"]]
    for i, name in enumerate(others):
        colours[name] = _PALETTE[i % len(_PALETTE)]
    if summary["baseline"] in summary["methods"]:
        colours[summary["baseline"]] = _BASELINE_COLOUR
    return colours


def render_all(summary: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, bytes]:
    """Every plot the data supports: ``weights``, ``trajectory``, ``metrics``, ``cost`` (absent if empty)."""
    plots = {
        "weights": plot_weights(summary),
        "trajectory": plot_trajectories(results),
        "metrics": plot_metrics(summary),
        "cost": plot_cost(summary),
    }
    return {name: png for name, png in plots.items() if png is not None}


def plot_weights(summary: Mapping[str, Any]) -> bytes | None:
    """Grouped bars: mean learned weight per source (± std over seeds), one bar per method, uniform dashed."""
    sources = summary["sources"]
    methods = [(n, m["weights"]) for n, m in summary["methods"].items() if m["weights"]]
    if not sources or not methods:
        return None
    colours = method_colours(summary)
    fig = _figure(max(6.0, 0.45 * len(sources) * len(methods) + 2.0), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for j, (name, w) in enumerate(methods):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(sources))]
        ax.bar(xs, [w["mean"][s] for s in sources], width, yerr=[w["std"][s] for s in sources],
               color=colours[name], label=name, capsize=2)
    ax.axhline(1.0 / len(sources), color="black", linestyle="--", linewidth=1, label="uniform 1/K")
    ax.set_xticks(range(len(sources)), sources, rotation=30 if len(sources) > 4 else 0, ha="right")
    ax.set_ylabel("weight (mean over seeds)")
    ax.set_title("Learned source weights")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_trajectories(results: Mapping[str, Any]) -> bytes | None:
    """Weight of each source over steps: one panel per method with a trajectory, one line style per seed."""
    panels = [(name, [r for r in runs if r.get("trajectory")]) for name, runs in results["methods"].items()]
    panels = [(name, runs) for name, runs in panels if runs]
    if not panels:
        return None
    fig = _figure(6.5 * len(panels), 4.0)
    styles = ("-", "--", ":", "-.")
    for k, (name, runs) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        sources = sorted({key[2:] for r in runs for t in r["trajectory"] for key in t
                          if key.startswith("p_")})
        for j, run in enumerate(runs):
            steps = [t["step"] for t in run["trajectory"]]
            for i, src in enumerate(sources):
                ax.plot(steps, [t.get(f"p_{src}", float("nan")) for t in run["trajectory"]],
                        color=_PALETTE[i % len(_PALETTE)], linestyle=styles[j % len(styles)], linewidth=1.2,
                        label=src if j == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("weight p")
        seeds = ", ".join(str(r.get("seed", i)) for i, r in enumerate(runs))
        ax.set_title(f"{name} weights over training (seeds {seeds})", fontsize=10)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_metrics(summary: Mapping[str, Any]) -> bytes | None:
    """One panel per metric (main first): mean ± std per method, each seed as a small dot beside it.

    Points rather than bars, because bars start at 0 and flatten the differences between losses that matter.
    """
    names = summary["metrics"]
    colours = method_colours(summary)
    fig = _figure(max(4.5, 3.6 * len(names)), 3.8)
    for k, metric in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        methods = [(n, m["metrics"][metric]) for n, m in summary["methods"].items() if metric in m["metrics"]]
        for i, (name, stats) in enumerate(methods):
            colour = colours[name]
            ax.errorbar(i, stats["mean"], yerr=stats["std"], fmt="o", markersize=8, capsize=6, color=colour)
            ax.scatter([i + 0.15] * len(stats["values"]), stats["values"], color=colour, s=12, alpha=0.6)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(methods)), [n for n, _ in methods], rotation=30, ha="right")
        arrow = "↑" if summary["directions"][metric] == "max" else "↓"
        main = " (main)" if metric == summary["main_metric"] else ""
        ax.set_title(f"{metric} {arrow}{main}", fontsize=10)
    return _png(fig)


def plot_cost(summary: Mapping[str, Any]) -> bytes | None:
    """Mean cost per method (± std): wall seconds and training tokens, whichever the runs recorded."""
    keys = [k for k in _COST_LABELS if any(k in m["cost"] for m in summary["methods"].values())]
    if not keys:
        return None
    colours = method_colours(summary)
    fig = _figure(4.2 * len(keys), 3.6)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), k + 1)
        methods = [(n, m["cost"][key]) for n, m in summary["methods"].items() if key in m["cost"]]
        ax.bar(range(len(methods)), [s["mean"] for _, s in methods], 0.6, yerr=[s["std"] for _, s in methods],
               color=[colours[n] for n, _ in methods], capsize=4)
        ax.set_xticks(range(len(methods)), [n for n, _ in methods], rotation=30, ha="right")
        ax.set_title(_COST_LABELS[key], fontsize=10)
    return _png(fig)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
