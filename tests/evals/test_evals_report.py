import base64
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from evals import plots, report
from evals.report import build_summary, headline, rich_table, table_rows, validate_results, write_report
from solvers.common import io as _io

SOURCES = ["clean", "noisy", "offtask"]
GOLDEN = Path(__file__).parent / "golden" / "summary.json"
N_ROWS = 120


def _run(seed, weights, acc, loss, cost=True, trajectory=False, rows=True):
    """One seed's run; with ``rows``, per-row values drawn around ``acc``/``loss`` (seeded, so reproducible)
    and the run's metrics are their means, as compare writes them."""
    run = {"seed": seed, "weights": dict(zip(SOURCES, weights, strict=True))}
    if rows:
        rng = np.random.default_rng([seed, int(acc * 1000), int(loss * 1000)])
        correct = (rng.random(N_ROWS) < acc).astype(float).tolist()
        losses = (loss + rng.normal(0, 0.2, N_ROWS)).tolist()
        run["per_example"] = {"accuracy": correct, "target_loss": losses}
        acc, loss = float(np.mean(correct)), float(np.mean(losses))
    run["metrics"] = {"accuracy": acc, "target_loss": loss, "ppl": float(np.exp(loss))}
    if cost:
        run["cost"] = {"wall_s": 10.0 + seed, "tokens": 4096}
    if trajectory:
        run["trajectory"] = [{"step": s, "p_clean": 1 / 3 + s / 300, "p_noisy": 1 / 3 - s / 600,
                              "p_offtask": 1 / 3 - s / 600} for s in range(0, 50, 10)]
    return run


def _results(scalebio_loss=1.20, doremi_loss=1.30, oracle=True, rows=True):
    """uniform (worst), temperature, doremi (the best alternative), scalebio and the oracle (the ceiling)."""
    def arm(weights, acc, loss, **kw):
        return [_run(s, weights, acc, loss + s / 100, rows=rows, **kw) for s in range(3)]

    methods = {
        "uniform": arm([1, 1, 1], 0.30, 1.60),
        "scalebio": arm([0.6, 0.1, 0.3], 0.55, scalebio_loss, trajectory=True),
        "temperature": arm([0.4, 0.3, 0.3], 0.35, 1.50, cost=False),
        "doremi": arm([0.5, 0.2, 0.3], 0.50, doremi_loss),
    }
    if oracle:
        methods["oracle"] = arm([1, 0, 0], 0.65, 1.00)
    return {"methods": methods, "oracle": "oracle" if oracle else None, "target": "copy test split",
            "meta": {"rule": "gsm8k", "oracle": "clean"}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One report written for all read-only checks: rendering the plots is the slow part."""
    out = tmp_path_factory.mktemp("report")
    return out, write_report(_results(), out)


def _shape(value):
    """The structure of a JSON value: keys and list lengths all the way down, numbers as their type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_summary_json_matches_the_golden_file(written):
    """summary.json keeps its structure and numbers; regenerate with CURATE_REGEN_GOLDEN=1 after a deliberate
    change (and say why in the commit)."""
    tmp_path, paths = written
    assert set(paths) == {"summary", "markdown", "html", "weights", "trajectory", "metrics", "cost"}
    text = (tmp_path / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    if os.environ.get("CURATE_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    golden = json.loads(GOLDEN.read_text())
    assert _shape(summary) == _shape(golden)
    _close(summary, golden)


def _close(a, b, path="summary"):
    if isinstance(a, dict):
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


def test_summary_content(written):
    summary = json.loads((written[0] / "summary.json").read_text())
    assert summary["main_metric"] == "target_loss" and summary["metrics"] == ["target_loss", "accuracy", "ppl"]
    assert summary["directions"] == {"accuracy": "max", "target_loss": "min", "ppl": "min"}
    assert list(summary["methods"]) == ["scalebio", "uniform", "temperature", "doremi", "oracle"]
    assert summary["plots"] == {n: f"{n}.png" for n in ("weights", "trajectory", "metrics", "cost")}
    assert summary["methods"]["scalebio"]["vs_headline"] is None
    cmp = summary["methods"]["uniform"]["vs_headline"]
    assert set(cmp) == {"target_loss", "accuracy"}  # ppl is exp(target_loss): shown, not tested twice
    assert cmp["target_loss"]["n_examples"] == N_ROWS and cmp["target_loss"]["n_seeds"] == 3
    assert summary["methods"]["temperature"]["cost"] == {}
    assert summary["methods"]["uniform"]["weights"]["mean"]["clean"] == pytest.approx(1 / 3)  # normalised
    assert summary["methods"]["scalebio"]["has_trajectory"] and not summary["methods"]["uniform"]["has_trajectory"]


def test_paired_numbers_are_row_level_and_signed():
    s = build_summary(_results())
    uni = s["methods"]["uniform"]
    cmp = uni["vs_headline"]["target_loss"]
    head = s["methods"]["scalebio"]["metrics"]["target_loss"]["mean"]
    assert cmp["mean_diff"] == pytest.approx(head - uni["metrics"]["target_loss"]["mean"])
    assert cmp["improvement"] == pytest.approx(-cmp["mean_diff"]) and cmp["improvement"] > 0  # lower is better
    assert cmp["ci"][0] < cmp["mean_diff"] < cmp["ci"][1] and cmp["outcome"] == "beat"
    # the gap closed: (method - uniform) / (oracle - uniform)
    o, u, m = (s["methods"][k]["metrics"]["target_loss"]["mean"] for k in ("oracle", "uniform", "scalebio"))
    assert s["methods"]["scalebio"]["gap_closed"]["target_loss"] == pytest.approx((m - u) / (o - u))


def test_pairing_is_by_seed_not_position():
    res = _results()
    res["methods"]["doremi"] = list(reversed(res["methods"]["doremi"]))
    flipped = build_summary(res)["methods"]["doremi"]["vs_headline"]["accuracy"]
    assert flipped == build_summary(_results())["methods"]["doremi"]["vs_headline"]["accuracy"]


def test_verdict_beat_the_best_other_method_and_uniform():
    s = build_summary(_results())
    v = s["verdict"]
    assert v["best_other"] == "doremi" and v["vs_best"]["outcome"] == "beat"
    assert v["vs_baseline"]["method"] == "uniform" and v["vs_baseline"]["outcome"] == "beat"
    assert v["oracle"]["holds"] and set(v["oracle"]["gap_closed"]) == {"scalebio", "temperature", "doremi"}
    assert [x["metric"] for x in v["secondary"]] == ["accuracy"]
    text = s["headline"]
    assert text.startswith("On target_loss (lower is better), scalebio beat doremi (+0.")
    assert ", the best other method, and beat uniform" in text and "95% CI [+" in text
    assert "The oracle (oracle, trained on clean alone) is the ceiling" in text and "scalebio " in text
    assert "On accuracy:" in text and f"With {N_ROWS} test rows × 3 seeds, a target_loss difference under ±" in text


def test_verdict_tied_when_the_interval_contains_zero():
    s = build_summary(_results(scalebio_loss=1.30, doremi_loss=1.30))
    assert s["verdict"]["vs_best"]["outcome"] == "tied"
    low, high = s["verdict"]["vs_best"]["ci"]
    assert low < 0 < high
    assert "scalebio tied with " in s["headline"]


def test_verdict_lost_to_the_best_other_method():
    s = build_summary(_results(scalebio_loss=1.45, doremi_loss=1.20))
    v = s["verdict"]
    assert v["best_other"] == "doremi" and v["vs_best"]["outcome"] == "lost" and v["vs_best"]["ci"][1] < 0
    assert "scalebio lost to doremi (-0." in s["headline"]


def test_an_oracle_that_a_method_beats_is_no_ceiling():
    res = _results(scalebio_loss=0.80)
    s = build_summary(res)
    assert not s["verdict"]["oracle"]["holds"] and s["verdict"]["oracle"]["above"] == ["scalebio"]
    assert "is no ceiling here: scalebio did better beyond the noise" in s["headline"]
    # a method a hair better than the oracle is within the noise: the ceiling holds, and the report says so
    close = build_summary(_results(scalebio_loss=0.98))
    assert close["verdict"]["oracle"]["holds"] and close["verdict"]["oracle"]["within_noise"] == ["scalebio"]
    assert "is the ceiling at" in close["headline"] and "(scalebio above it, within the noise)" in close["headline"]


def test_main_metric_is_configurable_and_checked():
    s = build_summary({**_results(), "main_metric": "accuracy"})
    assert s["main_metric"] == "accuracy" and s["headline"].startswith("On accuracy (higher is better)")
    assert [x["metric"] for x in s["verdict"]["secondary"]] == ["target_loss"]
    with pytest.raises(ValueError, match="main_metric"):
        build_summary({**_results(), "main_metric": "bleu"})


def test_seed_level_metrics_one_seed_and_missing_arms():
    seeds_only = build_summary(_results(rows=False))  # no per-row values: the bootstrap is over the 3 seeds
    cmp = seeds_only["methods"]["doremi"]["vs_headline"]["target_loss"]
    assert cmp["n_examples"] == 1 and cmp["ci"] is not None and cmp["p_wilcoxon"] is None
    uniform = [_run(0, [1, 1, 1], 0.4, 1.0, rows=False)]
    one_seed = {"methods": {"uniform": uniform, "scalebio": [_run(0, [1, 0, 0], 0.4, 1.0, rows=False)]}}
    text = build_summary(one_seed)["headline"]
    assert text.startswith("On target_loss (lower is better), scalebio was not tested against uniform")
    assert "no interval" in text
    rows_one_seed = {"methods": {"uniform": [_run(0, [1, 1, 1], 0.4, 1.5)],
                                 "scalebio": [_run(0, [1, 0, 0], 0.5, 1.2)]}}
    assert "one seed: the intervals cover test-row noise only" in build_summary(rows_one_seed)["headline"]
    no_method = {"methods": {"uniform": uniform}}
    assert build_summary(no_method)["headline"] == "No verdict: the results have no runs for 'scalebio'."
    disjoint = {"methods": {"uniform": uniform, "scalebio": [_run(5, [1, 0, 0], 0.5, 1.0, rows=False)]}}
    assert headline(build_summary(disjoint)).startswith("No verdict: no other arm shares a seed with scalebio")


def test_validate_results_lists_every_problem():
    bad = {"methods": {"uniform": [{"seed": 0, "metrics": {"accuracy": "high"}, "weights": {"a": -1}},
                                   {"seed": 0, "metrics": {}},
                                   {"seed": 2, "metrics": {"accuracy": 1}, "weights": {"a": 0, "b": 0},
                                    "trajectory": {"step": 1}}],
                       "scalebio": []},
           "directions": {"accuracy": "up"}}
    with pytest.raises(ValueError) as err:
        validate_results(bad)
    msg = str(err.value)
    for part in ("methods.uniform: duplicate seeds", "methods.uniform[0].metrics.accuracy", "weights.a",
                 "methods.uniform[1].metrics", "methods.scalebio: expected a non-empty list",
                 "directions.accuracy", "methods.uniform[2].weights: all weights are 0",
                 "methods.uniform[2].trajectory"):
        assert part in msg
    with pytest.raises(ValueError, match="main_metric"):
        build_summary({**_results(), "main_metric": "bleu"})


def test_html_is_self_contained(written):
    tmp_path, _ = written
    html = (tmp_path / "report.html").read_text()
    uris = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(uris) == 4
    for uri in uris:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    assert "scalebio beat doremi" in html


def test_markdown_references_written_plots(written):
    tmp_path, _ = written
    md = (tmp_path / "report.md").read_text()
    for file in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / file).is_file()
    assert "## scalebio versus every other arm, paired by test row and seed" in md
    assert "| doremi | accuracy |" in md and "| uniform | target_loss |" in md


def test_table_rows_and_rich_table():
    s = build_summary(_results())
    header, rows = table_rows(s)
    assert header[:5] == ["method", "seeds", "target_loss", "accuracy", "ppl"]
    assert header[5] == "scalebio lead\ntarget_loss, 95% CI"
    assert [r[0] for r in rows] == ["scalebio", "uniform", "temperature", "doremi", "oracle"]
    assert all(len(r) == len(header) for r in rows)
    assert rows[0][5] == "–" and rows[2][-1] == "–"
    assert re.fullmatch(r"\+0\.\d+ \[\+0\.\d+, \+0\.\d+\]", rows[1][5])  # scalebio leads uniform: all +
    assert rows[4][5].startswith("-") and rows[1][7] == "–" and rows[0][7].endswith("%")
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(rich_table(s))
    assert "scalebio" in console.export_text()


def test_plots_are_deterministic_and_skip_missing_data():
    s = build_summary(_results())
    assert plots.plot_weights(s) == plots.plot_weights(s)
    no_weights = {"methods": {"uniform": [{"seed": 0, "metrics": {"accuracy": 0.5}}]}}
    s2 = build_summary(no_weights)
    assert set(plots.render_all(s2, no_weights)) == {"metrics"}


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    _io.write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(OSError):
        _io.write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_rewrite_replaces_files(written, tmp_path):
    shutil.copytree(written[0], tmp_path, dirs_exist_ok=True)
    write_report(_results(scalebio_loss=1.45, doremi_loss=1.20), tmp_path)
    assert "lost to doremi" in json.loads((tmp_path / "summary.json").read_text())["headline"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dumps_is_strict_json():
    text = report.dumps({"a": float("inf"), "b": [float("nan"), 1.0]})
    assert json.loads(text) == {"a": None, "b": [None, 1.0]}


def test_a_rate_at_the_floor_is_called_noise():
    res = _results()
    for runs in res["methods"].values():
        for run in runs:
            run["metrics"]["accuracy"] = 0.01
            run["per_example"]["accuracy"] = [1.0] + [0.0] * (N_ROWS - 1)
    assert "Every arm's accuracy is under 5%, so its comparisons rest on a handful of rows" in (
        build_summary(res)["headline"])
    assert "under 5%" not in build_summary(_results())["headline"]
