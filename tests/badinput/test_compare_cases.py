"""`curate compare` with bad settings or arms that fail: refused before any work, or reported as failed cells."""

from __future__ import annotations

import json

from rich.console import Console

from curate.cli import app
from tests.badinput.conftest import fails_cleanly, runner, store_digest

SMALL = ["--seeds", "1", "--budget", "40", "recipe.steps=5", "recipe.eval_limit=5", "template=plain", "max_len=32",
         "tiny.hidden=32", "scalebio.steps=10", "scalebio.batch_size=8", "scalebio.val_batch_size=8"]


def _compare(arith_db, out, *args):
    return ["compare", "--methods", "uniform,scalebio", "--db", arith_db, "--out", out, *SMALL, *args]


def test_an_oracle_that_is_no_source_is_refused_before_any_work(tmp_path, arith_db):
    out = tmp_path / "cmp"
    fails_cleanly(_compare(arith_db, out, "--oracle", "nope"), ["--oracle", "'nope'", "clean"], db=arith_db)
    assert not (out / "cells").exists() and not (out / "base").exists()


def test_a_bad_eval_rule_is_refused_before_any_work(tmp_path, arith_db):
    out = tmp_path / "cmp"
    fails_cleanly(_compare(arith_db, out, "recipe.eval_rule=bogus"), ["recipe.eval_rule", "last_number"],
                  db=arith_db)
    assert not out.exists()


def test_a_top_level_steps_names_each_methods_own_key(tmp_path, arith_db):
    line = fails_cleanly(_compare(arith_db, tmp_path / "cmp", "steps=20"), ["steps=20", "scalebio.steps"],
                         db=arith_db)
    assert "--steps" not in line


def test_a_flat_method_key_must_name_its_method(tmp_path, arith_db):
    fails_cleanly(_compare(arith_db, tmp_path / "cmp", "alpha=10"), ["alpha=10", "scalebio.alpha"], db=arith_db)


def test_a_key_one_method_lacks_is_refused_before_any_arm_trains(tmp_path, arith_db):
    out = tmp_path / "cmp"
    fails_cleanly(_compare(arith_db, out, "scalebio.alphaa=3"), ["scalebio", "alphaa"], db=arith_db)
    assert not (out / "cells").exists()


def test_an_arm_that_diverges_is_a_failed_cell_in_the_verdict_and_is_never_reused(tmp_path, arith_db):
    out = tmp_path / "cmp"
    args = _compare(arith_db, out, "scalebio.lr_model=1e6", "--quiet")
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["uniform"]
    assert "FAILED" in summary["headline"] and "scalebio seed 0" in summary["headline"]
    assert "FAILED" in (out / "report.md").read_text()
    cell = json.loads((out / "cells" / "scalebio-seed0.json").read_text())
    assert "non-finite" in cell["failed"]
    # the same command again trains the failed arm again (and only it), with a fixed setting it succeeds
    uniform_before = (out / "cells" / "uniform-seed0.json").read_text()
    res = runner.invoke(app, [str(a) for a in _compare(arith_db, out, "scalebio.lr_model=1e6", "--quiet")])
    assert res.exit_code == 0 and (out / "cells" / "uniform-seed0.json").read_text() == uniform_before


def test_every_arm_failing_is_exit_2(tmp_path, arith_db):
    res = runner.invoke(app, [str(a) for a in _compare(arith_db, tmp_path / "cmp", "recipe.lr=1e9", "--quiet")])
    assert res.exit_code == 2, res.output
    assert "every cell failed" in res.output and "Traceback" not in res.output


def test_seed_sets_the_first_seed(tmp_path, arith_db):
    out = tmp_path / "cmp"
    before = store_digest(arith_db)
    res = runner.invoke(app, ["compare", "--methods", "uniform", "--seed", "5", "--db", str(arith_db), "--out",
                              str(out), "--quiet", *SMALL])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["uniform-seed5.json"]
    assert store_digest(arith_db) != before  # the arm's run is recorded (curate runs)


def test_the_compare_table_stays_whole_at_80_columns():
    from evals.report import build_summary, rich_table

    results = {"methods": {name: [{"seed": 0, "metrics": {"accuracy": 0.4751, "target_loss": 1234.5678,
                                                            "ppl": 98765.4321},
                                   "cost": {"wall_s": 12345.6, "tokens": 2_000_000}}]
                           for name in ("uniform", "temperature_sampling_long_name")}}
    console = Console(record=True, width=80)
    console.print(rich_table(build_summary(results)))
    text = console.export_text()
    for whole in ("uniform", "12345.6", "0.4751", "1235", "accuracy", "target_loss"):  # tokens: in the report
        assert whole in text, text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
