"""Turn the results of `curate compare` into a summary, a headline, tables, plots and a report folder.

The input is plain data, so any script can produce it (``RESULTS`` below documents it); ``build_summary``
reduces it to per-method means, spreads and paired comparisons against the baseline, and ``write_report``
writes ``summary.json``, ``report.md``, a self-contained ``report.html`` (plots embedded as data URIs, so it
opens offline and can be mailed as one file) and the PNG plots. Every file is written atomically.

The headline is deliberately blunt: it says whether the headline method (ScaleBiO) beat the baseline (uniform)
on the main metric, by how much, on how many paired seeds and how significantly, and says so just as plainly
when it did not.

Usage::

    paths = write_report(results, Path("runs/compare-1"))
    rows = table_rows(build_summary(results))   # for a Rich table in the CLI
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evals import metrics as M
from evals.verdict import build_verdict, headline_text, improvement_ci, p_value
from solvers.common.io import write_bytes, write_text

SCHEMA_VERSION = 2

RESULTS = """
results = {
  "methods": {                                # required: method name -> list of runs, one per seed
    "uniform": [
      {"seed": 0,                             # int or str; runs are paired across methods by seed
       "weights": {"src_a": 0.5, ...},        # optional: per-source weights the run trained on (>= 0)
       "metrics": {"target_loss": 1.23,       # required: metric name -> number; lower is better for names
                   "ppl": 3.42,               #   containing loss/ppl/perplexity/nll/error, else higher
                   "accuracy": 0.41},
       "per_example": {"accuracy": [1, 0, ...],      # optional: metric -> one value per test example, in the
                       "target_loss": [...]},        #   same example order in every run; their mean is the metric
       "cost": {"wall_s": 12.5, "tokens": 40960},   # optional: numbers; wall_s and tokens are plotted
       "trajectory": [{"step": 0, "p_src_a": 0.5, ...}, ...]},  # optional (ScaleBiO): weights over steps
      ...],
    "scalebio": [...],
  },
  "baseline": "uniform",                      # optional, default "uniform": the naive mixture the verdict names
  "headline_method": "scalebio",              # optional, default "scalebio": compared with every other arm
  "oracle": "oracle",                         # optional: the arm that trained on the target task alone (a ceiling)
  "main_metric": "target_loss",               # optional; default target_loss, else accuracy, else the first
  "directions": {"my_score": "max"},          # optional: "max" or "min" per metric, overriding the name rule
  "target": "gsm_symbolic test split",        # optional: what the metrics were measured on
  "meta": {...},                              # optional, JSON-able: copied to summary.json as is
}
"""

SUMMARY = """
summary = {                                   # what build_summary returns and summary.json holds
  "schema_version": 2,
  "baseline": "uniform", "headline_method": "scalebio", "oracle": "oracle" | None, "main_metric": "target_loss",
  "target": str | None,
  "metrics": ["target_loss", "accuracy", ...],          # main metric first
  "directions": {"accuracy": "max", "target_loss": "min", ...},
  "sources": ["src_a", ...],                            # union over all runs' weights, sorted
  "methods": {                                          # headline method first, then baseline, then as given
    "<method>": {
      "n_seeds": 3, "seeds": [0, 1, 2],
      "metrics": {"<metric>": {"mean", "std", "n", "values"}},
      "cost": {"wall_s": {"mean", "std", "n", "values"}, "tokens": {...}},    # {} when no run has a cost
      "weights": {"mean": {src: w}, "std": {src: w}, "n"} | None,              # normalised per run first
      "weight_stats": {"entropy", "effective_sources", "tv_to_uniform", "kl_to_uniform"} | None,
      "vs_headline": {                                  # the headline method minus this one; None for itself
        "<metric>": {"mean_diff", "improvement", "higher_is_better", "ci", "half_width", "p", "p_wilcoxon",
                     "p_ttest", "n_seeds", "n_examples", "seed_noise", "seeds_better", "seeds_worse",
                     "outcome"} | None},
      "vs_oracle": {"<metric>": {...as vs_headline...}} | None,  # this one minus the oracle; None without one
      "gap_closed": {"<metric>": share | None} | None,  # (method - baseline) / (oracle - baseline)
      "has_trajectory": bool}},
  "verdict": {...},                                     # evals.verdict.VERDICT documents it
  "headline": "scalebio beat the best other method, doremi, on target_loss ...",
  "meta": {...},                                        # copied from results
  "plots": {"weights": "weights.png", ...},             # added by write_report, plots actually written
}
"""

_LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "nll", "error")
_UNPAIRED = ("ppl",)
"""Metrics shown but not compared: perplexity is exp(target_loss), a monotone copy of it."""


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise one ``ValueError`` listing every problem in ``results`` (see ``RESULTS``), each with its path."""
    problems: list[str] = []
    methods = results.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("results.methods: expected a non-empty mapping of method name -> list of runs")
    for name, runs in methods.items():
        if not isinstance(runs, Sequence) or isinstance(runs, str) or not runs:
            problems.append(f"methods.{name}: expected a non-empty list of runs")
            continue
        seeds = [run.get("seed", i) if isinstance(run, Mapping) else i for i, run in enumerate(runs)]
        if len(set(map(str, seeds))) != len(seeds):
            problems.append(f"methods.{name}: duplicate seeds {seeds}")
        for i, run in enumerate(runs):
            problems.extend(_run_problems(f"methods.{name}[{i}]", run))
    for key in ("baseline", "headline_method", "oracle", "main_metric", "target"):
        if results.get(key) is not None and not isinstance(results[key], str):
            problems.append(f"results.{key}: expected a string")
    for metric, way in dict(results.get("directions") or {}).items():
        if way not in ("max", "min"):
            problems.append(f"directions.{metric}: expected 'max' or 'min', got {way!r}")
    if problems:
        raise ValueError("invalid comparison results:\n  " + "\n  ".join(problems))


def _run_problems(path: str, run: Any) -> list[str]:
    if not isinstance(run, Mapping):
        return [f"{path}: expected a mapping"]
    problems = []
    if not isinstance(run.get("metrics"), Mapping) or not run["metrics"]:
        problems.append(f"{path}.metrics: expected a non-empty mapping of metric -> number")
    for field in ("metrics", "weights", "cost"):
        for key, value in dict(run.get(field) or {}).items():
            if not _is_number(value) or (field == "weights" and value < 0):
                wanted = "weight >= 0" if field == "weights" else "number"
                problems.append(f"{path}.{field}.{key}: expected a {wanted}, got {value!r}")
    weights = run.get("weights")
    if weights and all(_is_number(w) for w in weights.values()) and sum(weights.values()) <= 0:
        problems.append(f"{path}.weights: all weights are 0")
    for key, values in dict(run.get("per_example") or {}).items():
        if not isinstance(values, Sequence) or isinstance(values, str) or not all(map(_is_number, values)):
            problems.append(f"{path}.per_example.{key}: expected a list of finite numbers")
    trajectory = run.get("trajectory")
    if trajectory is not None and (not isinstance(trajectory, Sequence) or
                                   not all(isinstance(t, Mapping) and "step" in t for t in trajectory)):
        problems.append(f"{path}.trajectory: expected a list of mappings with 'step' and 'p_<source>' keys")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def higher_is_better(metric: str, directions: Mapping[str, str] | None = None) -> bool:
    """Direction of ``metric``: a ``directions`` entry wins, else loss-like names are lower-is-better."""
    if directions and metric in directions:
        return directions[metric] == "max"
    return not any(word in metric.lower() for word in _LOWER_IS_BETTER)


def build_summary(results: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """Reduce validated ``results`` to the JSON-able summary every renderer reads.

    Args:
        results: See ``RESULTS``.
        seed: Seeds the bootstrap, so the same results always give the same intervals.

    Returns:
        The summary; ``SUMMARY`` documents its keys. Non-finite numbers become None.
    """
    validate_results(results)
    methods: Mapping[str, list[Mapping[str, Any]]] = results["methods"]
    baseline = results.get("baseline", "uniform")
    headline_method = results.get("headline_method", "scalebio")
    oracle = results.get("oracle")
    directions = dict(results.get("directions") or {})
    metric_names = _metric_names(methods, results.get("main_metric"))
    ways = {m: "max" if higher_is_better(m, directions) else "min" for m in metric_names}
    sources = sorted({s for runs in methods.values() for run in runs for s in (run.get("weights") or {})})
    head_runs = methods.get(headline_method)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "baseline": baseline,
        "headline_method": headline_method,
        "oracle": oracle if oracle in methods else None,
        "main_metric": metric_names[0],
        "target": results.get("target"),
        "metrics": metric_names,
        "directions": ways,
        "sources": sources,
        "methods": {name: _method_summary(runs, head_runs, metric_names, ways, sources,
                                          is_headline=name == headline_method, seed=seed,
                                          oracle_runs=methods.get(oracle) if oracle else None,
                                          is_oracle=name == oracle)
                    for name, runs in _ordered(methods, baseline, headline_method)},
        "meta": results.get("meta") or {},
    }
    _add_gap_closed(summary)
    summary["verdict"] = build_verdict(summary)
    summary["headline"] = headline_text(summary)
    return _json_safe(summary)


def _metric_names(methods: Mapping[str, Sequence[Mapping[str, Any]]], main: str | None) -> list[str]:
    names: list[str] = []
    for runs in methods.values():
        for run in runs:
            names.extend(k for k in run["metrics"] if k not in names)
    if main is None:
        main = next((m for m in ("target_loss", "accuracy") if m in names), names[0])
    if main not in names:
        raise ValueError(f"main_metric: {main!r} is not a metric of any run (have {', '.join(names)})")
    return [main] + [n for n in names if n != main]


def _ordered(methods: Mapping[str, Any], baseline: str, headline_method: str) -> list[tuple[str, Any]]:
    """Headline method first, baseline second, the rest as given: the order of every table and plot."""
    first = [m for m in (headline_method, baseline) if m in methods]
    return [(m, methods[m]) for m in first] + [(m, r) for m, r in methods.items() if m not in first]


def _method_summary(runs: Sequence[Mapping[str, Any]], head_runs: Sequence[Mapping[str, Any]] | None,
                    metric_names: list[str], ways: Mapping[str, str], sources: list[str], is_headline: bool,
                    seed: int, oracle_runs: Sequence[Mapping[str, Any]] | None = None,
                    is_oracle: bool = False) -> dict[str, Any]:
    seeds = [run.get("seed", i) for i, run in enumerate(runs)]
    out: dict[str, Any] = {
        "n_seeds": len(runs),
        "seeds": seeds,
        "metrics": {m: _stats([run["metrics"][m] for run in runs if m in run["metrics"]])
                    for m in metric_names},
        "cost": {k: _stats([run["cost"][k] for run in runs if k in (run.get("cost") or {})])
                 for k in _keys(run.get("cost") or {} for run in runs)},
        "has_trajectory": any(run.get("trajectory") for run in runs),
    }
    out["metrics"] = {m: s for m, s in out["metrics"].items() if s is not None}
    out.update(_weights_summary(runs, sources))
    out["vs_headline"] = None if is_headline or head_runs is None else {
        m: _paired(head_runs, runs, m, ways[m] == "max", seed) for m in metric_names if m not in _UNPAIRED}
    out["vs_oracle"] = None if is_oracle or oracle_runs is None else {
        m: _paired(runs, oracle_runs, m, ways[m] == "max", seed) for m in metric_names if m not in _UNPAIRED}
    out["gap_closed"] = None
    return out


def _keys(dicts: Any) -> list[str]:
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    return keys


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    mean, std = M.mean_std([float(v) for v in values])
    return {"mean": mean, "std": std, "n": len(values), "values": [float(v) for v in values]}


def _weights_summary(runs: Sequence[Mapping[str, Any]], sources: list[str]) -> dict[str, Any]:
    """Mean and spread of the weights over seeds, and how far their mean is from uniform."""
    vectors = [M.normalise_weights({s: float(run["weights"].get(s, 0.0)) for s in sources})
               for run in runs if run.get("weights")]
    if not vectors:
        return {"weights": None, "weight_stats": None}
    stats = {s: M.mean_std([v[s] for v in vectors]) for s in sources}
    mean = {s: stats[s][0] for s in sources}
    uniform = M.uniform_weights(sources)
    return {
        "weights": {"mean": mean, "std": {s: stats[s][1] for s in sources}, "n": len(vectors)},
        "weight_stats": {"entropy": M.weight_entropy(mean), "effective_sources": M.effective_sources(mean),
                         "tv_to_uniform": M.total_variation(mean, uniform),
                         "kl_to_uniform": M.kl_divergence(mean, uniform)},
    }


def _paired(head_runs: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], metric: str,
            higher: bool, seed: int) -> dict[str, Any] | None:
    """The headline method minus ``runs`` on the seeds both ran: per example when both carry per-example
    values of the same length on every shared seed, else per seed. None when they share no seed."""
    from evals.stats import paired_difference

    mine = {str(run.get("seed", i)): run for i, run in enumerate(runs) if metric in run["metrics"]}
    pairs = [(h, mine[str(h.get("seed", i))]) for i, h in enumerate(head_runs)
             if metric in h["metrics"] and str(h.get("seed", i)) in mine]
    if not pairs:
        return None
    examples = [((h.get("per_example") or {}).get(metric), (o.get("per_example") or {}).get(metric))
                for h, o in pairs]
    widths = {len(x) if x is not None else -1 for pair in examples for x in pair}
    if len(widths) == 1 and -1 not in widths:  # every run has per-row values, all of one length
        a, b = [e[0] for e in examples], [e[1] for e in examples]
    else:
        a, b = [h["metrics"][metric] for h, _ in pairs], [o["metrics"][metric] for _, o in pairs]
    out = paired_difference(a, b, higher_is_better=higher, seed=seed)
    out["outcome"] = outcome(out)
    return out


def outcome(cmp: Mapping[str, Any]) -> str:
    """``beat`` / ``lost`` when the 95% interval excludes 0 (``improvement`` says which way), ``tied`` when it
    contains 0, ``untested`` when there was nothing to resample (one seed, no per-example values)."""
    if cmp.get("ci") is None:
        return "untested"
    low, high = cmp["ci"]
    if low <= 0 <= high:
        return "tied"
    return "beat" if cmp["improvement"] > 0 else "lost"


def _add_gap_closed(summary: dict[str, Any]) -> None:
    """Share of the baseline's distance to the oracle that each method covered, per metric (1 = the oracle's
    level, 0 = the baseline's, < 0 worse than the baseline)."""
    oracle, base = summary["oracle"], summary["baseline"]
    methods = summary["methods"]
    if oracle is None or base not in methods:
        return
    for name, m in methods.items():
        if name in (oracle, base):
            continue
        shares = {}
        for metric in summary["metrics"]:
            o, b, x = (methods[k]["metrics"].get(metric, {}).get("mean") for k in (oracle, base, name))
            gap = None if None in (o, b, x) else o - b  # type: ignore[operator]
            shares[metric] = None if not gap else (x - b) / gap  # type: ignore[operator]
        m["gap_closed"] = shares


headline = headline_text
"""The verdict sentences (``summary["headline"]``), recomputed from the summary's verdict."""


def _pm(stats: Mapping[str, Any]) -> str:
    return f"{stats['mean']:.4g} ± {stats['std']:.2g}"


def table_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (all strings) of the one-screen comparison table the CLI renders with Rich.

    Columns: method, seeds, each metric as ``mean ± std``, the headline method's lead over this arm on the main
    metric (signed so ``+`` means the headline method is better) with its 95% interval and p-value, the share of
    the baseline-to-oracle gap closed, mean wall seconds and mean tokens.
    """
    metric_names, main = summary["metrics"], summary["main_metric"]
    lead = f"{summary['headline_method']} lead\n{main}, 95% CI"
    header = ["method", "seeds", *metric_names, lead, "p", "gap closed", "wall s", "tokens"]
    rows = []
    for name, m in summary["methods"].items():
        cmp = (m["vs_headline"] or {}).get(main)
        gap = (m.get("gap_closed") or {}).get(main)
        rows.append([
            name, str(m["n_seeds"]),
            *[_pm(m["metrics"][k]) if k in m["metrics"] else "–" for k in metric_names],
            "–" if cmp is None else lead_text(cmp),
            "–" if cmp is None else p_value(cmp["p"]),
            "–" if gap is None else f"{gap:.0%}",
            _cost_cell(m, "wall_s", "{:.1f}"), _cost_cell(m, "tokens", "{:,.0f}"),
        ])
    return header, rows


def lead_text(cmp: Mapping[str, Any]) -> str:
    """The headline method's improvement over an arm with its interval, both signed so + is better."""
    ci = improvement_ci(cmp)
    if ci is None:
        return f"{cmp['improvement']:+.3g}"
    return f"{cmp['improvement']:+.3g} [{ci[0]:+.2g}, {ci[1]:+.2g}]"


def _cost_cell(method: Mapping[str, Any], key: str, fmt: str) -> str:
    stats = method["cost"].get(key)
    return "–" if not stats else fmt.format(stats["mean"])


def rich_table(summary: Mapping[str, Any], title: str = "curate compare", caption: bool = True) -> Any:
    """:func:`table_rows` as two Rich tables (the metrics, then the comparison and the wall time), so each stays
    whole at 80 columns; captioned with the headline unless ``caption=False``."""
    from rich.console import Group
    from rich.table import Table

    header, rows = table_rows(summary)
    split = 2 + len(summary["metrics"])
    keep = slice(split, len(header) - 1)  # tokens stay in the report: with it the second table passes 80 columns
    parts = [(title, header[:split], [r[:split] for r in rows]),
             (None, header[:1] + header[keep], [r[:1] + r[keep] for r in rows])]
    tables = []
    for name, cols, cells in parts:
        table = Table(title=name)
        shortest = min(12, max(len(r[0]) for r in cells))  # a long method name folds; numbers never do
        for i, col in enumerate(cols):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i > 0, overflow="fold",
                             min_width=shortest if i == 0 else None)
        for row in cells:
            table.add_row(*row)
        tables.append(table)
    if caption:
        tables[-1].caption = summary["headline"]
    return Group(*tables)


def write_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``summary.json``, ``report.md``, ``report.html`` and the PNG plots into ``out_dir``.

    Args:
        results: Comparison results as documented in ``RESULTS``.
        out_dir: Folder to write into (created if needed); existing files of the same names are replaced.

    Returns:
        Artefact name (``"summary"``, ``"markdown"``, ``"html"``, and one per plot) -> path written.

    Raises:
        ValueError: ``results`` does not follow ``RESULTS``; the message lists every problem.
    """
    from evals import plots, render

    summary = build_summary(results)
    images = plots.render_all(summary, results)
    out_dir = Path(out_dir)
    paths = {name: write_bytes(out_dir / f"{name}.png", png) for name, png in images.items()}
    summary["plots"] = {name: f"{name}.png" for name in images}
    paths["summary"] = write_text(out_dir / "summary.json", dumps(summary))
    paths["markdown"] = write_text(out_dir / "report.md", render.markdown(summary))
    paths["html"] = write_text(out_dir / "report.html", render.html(summary, images))
    return paths


def dumps(summary: Mapping[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity tokens, which other JSON readers reject) with a trailing newline."""
    return json.dumps(_json_safe(summary), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
