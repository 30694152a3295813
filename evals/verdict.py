"""The comparison's verdict: did the headline method beat the best alternative, the naive mixture, and how close
did it come to the ceiling.

A user asks "does ScaleBiO beat the best thing I could have used instead?", not "does it beat uniform", so the
verdict names the best other arm on the main metric (the oracle excluded: it is a ceiling, not a method) and says
beat / tied / lost from the 95% interval of the paired difference (``tied`` whenever the interval contains 0),
then the same against the baseline. The oracle, when present, is the ceiling: each method's share of the
baseline's gap to it is reported, and an oracle that some method beats is said to be no ceiling. The other
compared metrics get the same one-clause verdict, and the resolution (the median interval half-width) says how
small a difference this many test rows and seeds could have shown.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

VERDICT = """
verdict = {
  "metric": "target_loss", "headline_method": "scalebio", "baseline": "uniform",
  "n_examples": 200, "n_seeds": 3, "seed_noise": True,
  "best_other": "doremi" | None,                       # best mean on the metric among the non-headline arms
  "vs_best": {"method", "outcome": "beat|tied|lost|untested", "improvement", "ci", "p"} | None,  # + = better
  "vs_baseline": {...same...} | None,                  # None when the baseline is the best other arm or absent
  "oracle": {"name", "mean", "holds": bool, "above": [methods better beyond the noise],
             "within_noise": [methods better on average, but within the noise], "gap_closed": {m: share}} | None,
  "secondary": [{"metric", "best_other", "vs_best", "vs_baseline"}, ...],  # every other compared metric
  "resolution": {"<metric>": median 95% half-width over the arms},
}
"""


def build_verdict(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict of a summary built by :func:`evals.report.build_summary`; ``VERDICT`` documents it."""
    metric = summary["main_metric"]
    out: dict[str, Any] = {"metric": metric, "headline_method": summary["headline_method"],
                           "baseline": summary["baseline"], **_size(summary, metric), **_against(summary, metric)}
    out["oracle"] = _oracle(summary, metric)
    compared = [m for m in summary["metrics"][1:] if _comparisons(summary, m)]
    out["secondary"] = [{"metric": m, **_against(summary, m)} for m in compared]
    out["resolution"] = {m: _resolution(summary, m) for m in [metric, *compared]}
    return out


def _comparisons(summary: Mapping[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """Arm -> its paired comparison with the headline method on ``metric`` (arms without one left out)."""
    return {name: cmp for name, m in summary["methods"].items()
            if (cmp := (m.get("vs_headline") or {}).get(metric)) is not None}


def _against(summary: Mapping[str, Any], metric: str) -> dict[str, Any]:
    cmps = _comparisons(summary, metric)
    others = [n for n in cmps if n != summary.get("oracle")]
    best = _best(summary, others, metric)
    base = summary["baseline"]
    return {"best_other": best, "vs_best": _brief(best, cmps) if best else None,
            "vs_baseline": _brief(base, cmps) if base in cmps and base != best else None}


def _best(summary: Mapping[str, Any], names: list[str], metric: str) -> str | None:
    if not names:
        return None
    sign = 1.0 if summary["directions"][metric] == "max" else -1.0
    return max(names, key=lambda n: sign * summary["methods"][n]["metrics"][metric]["mean"])


def _brief(name: str, cmps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One comparison, with ``ci`` the interval of the improvement (signed so + means the headline is better)."""
    cmp = cmps[name]
    return {"method": name, "outcome": cmp["outcome"], "improvement": cmp["improvement"],
            "ci": improvement_ci(cmp), "p": cmp["p"]}


def improvement_ci(cmp: Mapping[str, Any]) -> list[float] | None:
    """The interval of ``improvement`` (+ is better), from the interval of the raw difference ``ci``."""
    if cmp["ci"] is None:
        return None
    sign = 1.0 if cmp["higher_is_better"] else -1.0
    return sorted(sign * x for x in cmp["ci"])


def _size(summary: Mapping[str, Any], metric: str) -> dict[str, Any]:
    cmps = list(_comparisons(summary, metric).values())
    if not cmps:
        return {"n_examples": None, "n_seeds": None, "seed_noise": None}
    first = cmps[0]
    return {"n_examples": first["n_examples"], "n_seeds": first["n_seeds"], "seed_noise": first["seed_noise"]}


def _resolution(summary: Mapping[str, Any], metric: str) -> float | None:
    widths = [c["half_width"] for c in _comparisons(summary, metric).values() if c["half_width"] is not None]
    return statistics.median(widths) if widths else None


def _oracle(summary: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    name = summary.get("oracle")
    methods = summary["methods"]
    if not name or metric not in methods[name]["metrics"]:
        return None
    level = methods[name]["metrics"][metric]["mean"]
    vs = {n: cmp for n, m in methods.items() if (cmp := (m.get("vs_oracle") or {}).get(metric)) is not None}
    above = [n for n, cmp in vs.items() if cmp["outcome"] == "beat"]  # better than the oracle beyond the noise
    within = [n for n, cmp in vs.items() if cmp["outcome"] in ("tied", "untested") and cmp["improvement"] > 0]
    gaps = {n: m["gap_closed"][metric] for n, m in methods.items()
            if (m.get("gap_closed") or {}).get(metric) is not None}
    return {"name": name, "mean": level, "holds": not above, "above": above, "within_noise": within,
            "gap_closed": gaps}


def headline_text(summary: Mapping[str, Any]) -> str:
    """The verdict as a few plain sentences, then the cells that failed (they are in no number), if any."""
    v = summary.get("verdict") or build_verdict(summary)
    meta = summary.get("meta") or {}
    parts = [_main_sentence(summary, v), _oracle_sentence(summary, v),
             *[_secondary_sentence(s) for s in v["secondary"]], _size_sentence(v), _floor_sentence(summary),
             *meta.get("notes", [])]
    text = " ".join(p for p in parts if p)
    failed = _listing(meta.get("failed"))
    evals = _listing(meta.get("failed_evals"))
    return (text + (f" FAILED cells, left out of every number: {failed}." if failed else "")
            + (f" Some evaluations failed (their metric is missing there): {evals}." if evals else ""))


def _listing(failures: Mapping[str, list[str]] | None) -> str:
    return "; ".join(f"{arm} {reason}" for arm, reasons in (failures or {}).items() for reason in reasons)


_WORDS = {"beat": "beat", "tied": "tied with", "lost": "lost to", "untested": "was not tested against"}


def _clause(brief: Mapping[str, Any]) -> str:
    words = f"{_WORDS[brief['outcome']]} {brief['method']}"
    if brief["ci"] is None:
        return f"{words} ({brief['improvement']:+.3g}, one seed and no per-example values: no interval)"
    low, high = brief["ci"]
    return f"{words} ({brief['improvement']:+.3g}, 95% CI [{low:+.3g}, {high:+.3g}], {p_text(brief['p'])})"


def p_value(p: float | None) -> str:
    """A bootstrap p-value for a table cell: 0 means no replicate crossed 0, i.e. below the resolution of the
    resampling, so it reads ``< 0.001``."""
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_text(p: float | None) -> str:
    """:func:`p_value` in a sentence: ``p < 0.001``, ``p = 0.04``."""
    value = p_value(p)
    return f"p {value}" if value[0] in "<–" else f"p = {value}"


def _main_sentence(summary: Mapping[str, Any], v: Mapping[str, Any]) -> str:
    method, metric = v["headline_method"], v["metric"]
    way = "higher is better" if summary["directions"][metric] == "max" else "lower is better"
    if method not in summary["methods"]:
        return f"No verdict: the results have no runs for {method!r}."
    if v["vs_best"] is None:
        return f"No verdict: no other arm shares a seed with {method} on {metric}."
    best = v["vs_best"]
    text = f"On {metric} ({way}), {method} {_clause(best)}, the best other method"
    if v["vs_baseline"] is not None:
        text += f", and {_clause(v['vs_baseline'])}"
    return text + "."


def _oracle_sentence(summary: Mapping[str, Any], v: Mapping[str, Any]) -> str:
    o = v["oracle"]
    if o is None:
        return ""
    if not o["holds"]:
        return (f"The oracle arm ({o['name']}, {o['mean']:.4g}) is no ceiling here: {', '.join(o['above'])} did "
                f"better beyond the noise, so the target is not just the oracle's source.")
    gaps = ", ".join(f"{n} {share:.0%}" for n, share in o["gap_closed"].items())
    base = v["baseline"]
    source = (summary.get("meta") or {}).get("oracle")
    what = f"{o['name']}, trained on {source} alone" if source else o["name"]
    noise = f" ({', '.join(o['within_noise'])} above it, within the noise)" if o["within_noise"] else ""
    return (f"The oracle ({what}) is the ceiling at {o['mean']:.4g}{noise}" +
            (f"; share of {base}'s gap to it closed: {gaps}." if gaps else "."))


def _secondary_sentence(s: Mapping[str, Any]) -> str:
    if s["vs_best"] is None:
        return ""
    text = f"On {s['metric']}: {_clause(s['vs_best'])}"
    if s["vs_baseline"] is not None:
        text += f", {_clause(s['vs_baseline'])}"
    return text + "."


FLOOR = 0.05
"""A rate every arm stays under is at the floor: a few lucky rows decide its comparisons."""


def _floor_sentence(summary: Mapping[str, Any]) -> str:
    """Say so when a rate metric (accuracy: one 0/1 per row) is near 0 for every arm, so its clauses are noise."""
    low = [m for m in summary["metrics"] if summary["directions"].get(m) == "max" and "acc" in m
           and all(0 <= x["metrics"][m]["mean"] < FLOOR for x in summary["methods"].values() if m in x["metrics"])]
    if not low:
        return ""
    names = " and ".join(low)
    return (f"Every arm's {names} is under {FLOOR:.0%}, so its comparisons rest on a handful of rows; read "
            f"{summary['main_metric']} instead.") if summary["main_metric"] not in low else (
            f"Every arm's {names} is under {FLOOR:.0%}: the verdict rests on a handful of rows; a smoother metric "
            "(main_metric=target_loss) or a longer recipe would say more.")


def _size_sentence(v: Mapping[str, Any]) -> str:
    res = v["resolution"].get(v["metric"])
    if res is None or v["n_seeds"] is None:
        return ""
    rows = f"{v['n_examples']} test rows × " if v["n_examples"] and v["n_examples"] > 1 else ""
    text = (f"With {rows}{v['n_seeds']} seed{'s' if v['n_seeds'] != 1 else ''}, a {v['metric']} difference "
            f"under ±{res:.2g} cannot be told from noise")
    if not v["seed_noise"]:
        text += " (one seed: the intervals cover test-row noise only, not seed-to-seed variation)"
    return text + "."
