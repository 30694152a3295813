import base64
import json
import re
import shutil

import pytest

from evals import plots, report
from evals.report import build_summary, headline, rich_table, table_rows, validate_results, write_report
from solvers.common import io as _io

SOURCES = ["clean", "noisy", "offtask"]


def _run(seed, weights, acc, loss, cost=True, trajectory=False):
    run = {"seed": seed, "weights": dict(zip(SOURCES, weights, strict=True)),
           "metrics": {"accuracy": acc, "target_loss": loss, "ppl": 2.0 + loss}}
    if cost:
        run["cost"] = {"wall_s": 10.0 + seed, "tokens": 4096}
    if trajectory:
        run["trajectory"] = [{"step": s, "p_clean": 1 / 3 + s / 300, "p_noisy": 1 / 3 - s / 600,
                              "p_offtask": 1 / 3 - s / 600} for s in range(0, 50, 10)]
    return run


def _results(scalebio_acc=(0.50, 0.52, 0.55)):
    return {
        "methods": {
            "uniform": [_run(s, [1, 1, 1], a, 1.5 - s / 100) for s, a in enumerate((0.40, 0.45, 0.47))],
            "scalebio": [_run(s, [0.6, 0.1, 0.3], a, 1.4 - s / 100, trajectory=True)
                         for s, a in enumerate(scalebio_acc)],
            "temperature": [_run(s, [0.4, 0.3, 0.3], 0.44, 1.5, cost=False) for s in range(3)],
        },
        "target": "copy test split",
        "meta": {"rule": "gsm8k"},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One report written for all read-only checks: rendering the plots is the slow part."""
    out = tmp_path_factory.mktemp("report")
    return out, write_report(_results(), out)


METHOD_KEYS = {"n_seeds", "seeds", "metrics", "cost", "has_trajectory", "weights", "weight_stats",
               "vs_baseline"}
PAIRED_KEYS = {"n", "mean_diff", "std_diff", "improvement", "rel_improvement", "wins", "losses", "ties",
               "t_stat", "p_t", "p_sign"}


def test_summary_json_golden_structure(written):
    tmp_path, paths = written
    assert set(paths) == {"summary", "markdown", "html", "weights", "trajectory", "metrics", "cost"}
    assert all(p.exists() for p in paths.values())
    summary = json.loads((tmp_path / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert set(summary) == {"schema_version", "baseline", "headline_method", "main_metric", "target",
                            "metrics", "directions", "sources", "methods", "meta", "headline", "plots"}
    assert summary["main_metric"] == "accuracy" and summary["metrics"] == ["accuracy", "target_loss", "ppl"]
    assert summary["directions"] == {"accuracy": "max", "target_loss": "min", "ppl": "min"}
    assert list(summary["methods"]) == ["uniform", "scalebio", "temperature"]
    assert summary["plots"] == {n: f"{n}.png" for n in ("weights", "trajectory", "metrics", "cost")}
    for name, m in summary["methods"].items():
        assert set(m) == METHOD_KEYS, name
        assert set(m["metrics"]) == {"accuracy", "target_loss", "ppl"}
        assert set(m["metrics"]["accuracy"]) == {"mean", "std", "n", "values"}
        assert set(m["weights"]) == {"mean", "std", "n"} and set(m["weights"]["mean"]) == set(SOURCES)
        assert set(m["weight_stats"]) == {"entropy", "effective_sources", "tv_to_uniform", "kl_to_uniform"}
    assert summary["methods"]["uniform"]["vs_baseline"] is None
    assert set(summary["methods"]["scalebio"]["vs_baseline"]["accuracy"]) == PAIRED_KEYS
    assert set(summary["methods"]["scalebio"]["cost"]) == {"wall_s", "tokens"}
    assert summary["methods"]["temperature"]["cost"] == {}
    assert summary["methods"]["uniform"]["weights"]["mean"]["clean"] == pytest.approx(1 / 3)  # normalised
    assert summary["methods"]["scalebio"]["has_trajectory"]
    assert not summary["methods"]["uniform"]["has_trajectory"]


def test_paired_numbers_in_summary():
    s = build_summary(_results())
    cmp = s["methods"]["scalebio"]["vs_baseline"]
    assert cmp["accuracy"]["mean_diff"] == pytest.approx((0.10 + 0.07 + 0.08) / 3)
    assert cmp["accuracy"]["wins"] == 3 and cmp["accuracy"]["p_sign"] == pytest.approx(0.25)
    assert cmp["target_loss"]["mean_diff"] == pytest.approx(-0.1)
    assert cmp["target_loss"]["improvement"] == pytest.approx(0.1)  # lower loss is better
    assert cmp["target_loss"]["t_stat"] is None  # -inf (identical differences) is not valid JSON
    assert s["methods"]["scalebio"]["weight_stats"]["tv_to_uniform"] == pytest.approx(0.6 - 1 / 3)


def test_pairing_is_by_seed_not_position():
    res = _results()
    res["methods"]["scalebio"] = list(reversed(res["methods"]["scalebio"]))
    cmp = build_summary(res)["methods"]["scalebio"]["vs_baseline"]["accuracy"]
    assert cmp["std_diff"] == pytest.approx(build_summary(_results())["methods"]["scalebio"]["vs_baseline"][
        "accuracy"]["std_diff"])


def test_headline_beat():
    text = build_summary(_results())["headline"]
    assert text.startswith("scalebio beat uniform on accuracy")
    assert "+0.08333" in text and "3 of 3 paired seeds" in text


def test_headline_says_so_when_scalebio_loses():
    text = build_summary(_results(scalebio_acc=(0.38, 0.46, 0.40)))["headline"]
    assert text.startswith("scalebio did not beat uniform on accuracy")
    assert "-0.02667" in text and "worse" in text and "better on 1 of 3" in text and "not significant" in text


def test_headline_on_a_loss_metric_and_edge_cases():
    res = _results()
    res["main_metric"] = "target_loss"
    text = build_summary(res)["headline"]
    assert text.startswith("scalebio beat uniform on target_loss (lower is better)")
    assert "same difference on every seed, so no t-test" in text  # not a misleading "p = 0"
    uniform = [_run(0, [1, 1, 1], 0.4, 1.0)]
    one_seed = {"methods": {"uniform": uniform, "scalebio": [_run(0, [1, 0, 0], 0.4, 1.0)]}}
    text = build_summary(one_seed)["headline"]
    assert text.startswith("scalebio tied with uniform") and "too few seeds" in text
    no_method = {"methods": {"uniform": uniform}}
    assert build_summary(no_method)["headline"] == "No verdict: the results have no runs for 'scalebio'."
    disjoint = {"methods": {"uniform": uniform, "scalebio": [_run(5, [1, 0, 0], 0.5, 1.0)]}}
    assert headline(build_summary(disjoint)).startswith("No verdict: scalebio and uniform share no seed")


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
    assert "scalebio beat uniform" in html


def test_markdown_references_written_plots(written):
    tmp_path, _ = written
    md = (tmp_path / "report.md").read_text()
    for file in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / file).is_file()
    assert "## Versus uniform, paired by seed" in md and "| scalebio | accuracy |" in md


def test_table_rows_and_rich_table():
    s = build_summary(_results())
    header, rows = table_rows(s)
    assert header[:5] == ["method", "seeds", "accuracy", "target_loss", "ppl"]
    assert [r[0] for r in rows] == ["uniform", "scalebio", "temperature"]
    assert all(len(r) == len(header) for r in rows)
    assert rows[1][2] == "0.5233 ± 0.025" and rows[1][5] == "+0.08333"
    assert rows[0][5] == "–" and rows[2][-1] == "–"
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
    write_report(_results(scalebio_acc=(0.3, 0.3, 0.3)), tmp_path)
    assert "did not beat" in json.loads((tmp_path / "summary.json").read_text())["headline"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dumps_is_strict_json():
    text = report.dumps({"a": float("inf"), "b": [float("nan"), 1.0]})
    assert json.loads(text) == {"a": None, "b": [None, 1.0]}
