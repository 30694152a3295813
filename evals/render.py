"""Markdown and self-contained HTML renderings of a comparison summary.

Both renderings are built from the same list of tables (``tables``), so they never disagree. The HTML embeds
every plot as a ``data:image/png;base64`` URI and carries its CSS inline: no scripts, fonts or links to fetch,
so it opens offline, in a sandboxed viewer, or as a mail attachment.
"""

from __future__ import annotations

import base64
import html as _html
import json
from collections.abc import Mapping
from typing import Any

from evals.report import table_rows

Table = tuple[str, list[str], list[list[str]]]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.headline{background:#f4f6f8;border-left:4px solid #1f77b4;padding:.7em 1em;font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}img{max-width:100%;height:auto;display:block;margin:.8em 0;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em}
"""

_PLOT_TITLES = {"weights": "Learned source weights", "trajectory": "Weight trajectories",
                "metrics": "Target metrics", "cost": "Cost"}


def tables(summary: Mapping[str, Any]) -> list[Table]:
    """The report's tables in order: results, paired comparison, weights, weight statistics, cost."""
    out: list[Table] = []
    header, rows = table_rows(summary)
    out.append(("Results (mean ± std over seeds)", header, rows))
    out.append(_paired_table(summary))
    out.extend(_weight_tables(summary))
    out.append(_cost_table(summary))
    return [t for t in out if t[2]]


def _paired_table(summary: Mapping[str, Any]) -> Table:
    from evals.report import lead_text
    from evals.verdict import p_value

    head = summary["headline_method"]
    header = ["method", "metric", f"{head} − method", f"{head} lead, 95% CI", "outcome", "p (bootstrap)",
              "p (Wilcoxon, rows)", "p (t, seeds)", "seeds better", "rows × seeds"]
    rows = []
    for name, m in summary["methods"].items():
        for metric, c in (m["vs_headline"] or {}).items():
            if c is None:
                continue
            rows.append([name, metric, f"{c['mean_diff']:+.4g}", lead_text(c), c["outcome"],
                         p_value(c["p"]), _num(c["p_wilcoxon"], ".3g"),
                         _num(c["p_ttest"], ".3g"), f"{c['seeds_better']}/{c['n_seeds']}",
                         f"{c['n_examples']} × {c['n_seeds']}"])
    return (f"{head} versus every other arm, paired by test row and seed", header, rows)


def _weight_tables(summary: Mapping[str, Any]) -> list[Table]:
    with_weights = [(n, m) for n, m in summary["methods"].items() if m["weights"]]
    header = ["source", *[n for n, _ in with_weights]]
    rows = [[src, *[f"{m['weights']['mean'][src]:.3f} ± {m['weights']['std'][src]:.3f}"
                    for _, m in with_weights]] for src in summary["sources"]]
    stats_header = ["method", "entropy (nats)", "effective sources", "TV to uniform", "KL to uniform"]
    stats_rows = [[n, f"{s['entropy']:.3f}", f"{s['effective_sources']:.2f}", f"{s['tv_to_uniform']:.3f}",
                   _num(s["kl_to_uniform"], ".3f")]
                  for n, m in with_weights if (s := m["weight_stats"])]
    return [("Source weights (mean ± std over seeds)", header, rows),
            ("Weight statistics", stats_header, stats_rows)]


def _cost_table(summary: Mapping[str, Any]) -> Table:
    keys: list[str] = []
    for m in summary["methods"].values():
        keys.extend(k for k in m["cost"] if k not in keys)
    rows = [[n, *[f"{_big(m['cost'][k]['mean'])} ± {_big(m['cost'][k]['std'])}" if k in m["cost"] else "–"
                  for k in keys]] for n, m in summary["methods"].items()]
    return ("Cost (mean ± std over seeds)", ["method", *keys], rows if keys else [])


def _big(value: float) -> str:
    """Token counts and long wall times read better with separators than in scientific notation."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _intro(summary: Mapping[str, Any]) -> list[str]:
    main = summary["main_metric"]
    way = "higher is better" if summary["directions"][main] == "max" else "lower is better"
    seeds = ", ".join(f"{n}: {m['n_seeds']}" for n, m in summary["methods"].items())
    lines = [f"Main metric: {main} ({way}). Headline method: {summary['headline_method']}, compared with every "
             f"other arm. Baseline: {summary['baseline']}. Oracle: {summary.get('oracle') or 'none'}. "
             f"Seeds per method: {seeds}.",
             "Intervals are 95% percentile bootstraps over test rows with the seeds redrawn in every replicate "
             "(scipy.stats.bootstrap); 'tied' means the interval contains 0."]
    if summary.get("target"):
        lines.insert(0, f"Target: {summary['target']}.")
    return lines


def markdown(summary: Mapping[str, Any]) -> str:
    """The report as GitHub-flavoured Markdown; plots are referenced as sibling PNG files."""
    parts = ["# curate compare report", "", f"**{summary['headline']}**", "", *_intro(summary), ""]
    for title, header, rows in tables(summary):
        parts += [f"## {title}", "", _md_row(header), _md_row(["---"] * len(header))]
        parts += [_md_row(r) for r in rows] + [""]
    for name, file in (summary.get("plots") or {}).items():
        parts += [f"## {_PLOT_TITLES.get(name, name)}", "", f"![{name}]({file})", ""]
    if summary.get("meta"):
        meta = json.dumps(summary["meta"], indent=2, default=str)
        parts += ["## Run details", "", "```json", meta, "```", ""]
    return "\n".join(parts)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def html(summary: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The report as one self-contained HTML page with ``images`` (name -> PNG bytes) embedded inline."""
    esc = _html.escape
    body = ["<h1>curate compare report</h1>", f'<p class="headline">{esc(summary["headline"])}</p>']
    body += [f"<p>{esc(line)}</p>" for line in _intro(summary)]
    for title, header, rows in tables(summary):
        cells = "".join(f"<th>{esc(h)}</th>" for h in header)
        body.append(f"<h2>{esc(title)}</h2>\n<table>\n<tr>{cells}</tr>")
        body += [f"<tr>{''.join(f'<td>{esc(c)}</td>' for c in r)}</tr>" for r in rows]
        body.append("</table>")
    for name, png in images.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        title = _PLOT_TITLES.get(name, name)
        body += [f"<h2>{esc(title)}</h2>", f'<img alt="{esc(title)}" src="{uri}">']
    if summary.get("meta"):
        meta = json.dumps(summary["meta"], indent=2, default=str)
        body += ["<h2>Run details</h2>", f"<pre>{esc(meta)}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>curate compare: {esc(summary['headline_method'])} vs "
            f"{esc(summary['baseline'])}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
