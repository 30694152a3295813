"""`curate compare`: run the methods on the same data and budget, fine-tune, evaluate and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli._common import DEFAULT_DB, ConfigPath, Db, Out, Quiet, guarded, out
from curate.compare import DEFAULT_METHODS, CompareSettings, Recipe
from curate.compare import compare as run_compare
from curate.config import build, load_config
from curate.runs import safe_out_dir
from curate.settings import settings_from


def register(app: typer.Typer) -> None:
    from curate.cli.reweight import METHOD_KEYS

    app.command("compare", epilog="Every method's own key is written under its name here (scalebio.alpha=10, "
                "rho.reference_steps=50); recipe.* sets the fine-tune (recipe.steps, recipe.lr, recipe.eval_rule). "
                + "Step keys: " + METHOD_KEYS.split("`--steps` sets: ", 1)[1])(compare)


@guarded
def compare(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides (e.g. recipe.steps=200).")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = ",".join(DEFAULT_METHODS),
    budget: Annotated[int, typer.Option(help="Rows in every method's dataset.")] = 1000,
    seeds: Annotated[int, typer.Option(help="Seeds per method (paired across methods).")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="The first seed (runs seeds SEED .. SEED+SEEDS-1).")] = 0,
    target: Annotated[str, typer.Option(help="Target for the methods: a split or a source.")] = "val",
    eval_split: Annotated[str, typer.Option(help="Split the fine-tuned models are evaluated on.")] = "test",
    model: Annotated[str, typer.Option(help="'tiny' or a local Hugging Face model folder.")] = "tiny",
    oracle: Annotated[str | None, typer.Option(help="Also train on this source alone (a ceiling).")] = None,
    config: ConfigPath = None,
    db: Db = DEFAULT_DB,
    out_dir: Out = None,
    quiet: Quiet = False,
) -> None:
    """Which data trains the best model for my target? Every method, same budget, same recipe, same eval."""
    settings = settings_for(load_config(config, overrides or []), methods, budget, seeds, target, eval_split, model,
                            oracle, seed)
    dest = safe_out_dir(out_dir, "compare")
    report = run_compare(db, settings, dest)
    print_summary(report, title="curate compare", report_path=dest / "report.html")


def print_summary(report: dict, title: str, report_path: Path) -> None:
    """The comparison table, the one-line verdict and where the report is."""
    from evals.report import build_summary, headline, rich_table

    summary = build_summary(report)
    out.print(rich_table(summary, title=title, caption=False))
    out.print(headline(summary))
    out.print(f"report: {report_path}")


def settings_for(values: dict, methods: str, budget: int, seeds: int, target: str, eval_split: str, model: str,
                 oracle: str | None, seed: int = 0) -> CompareSettings:
    """Merge CLI flags and a config into CompareSettings (``recipe.*`` and reweight keys may come from either)."""
    recipe = build(Recipe, values.pop("recipe", {}) or {}, where="recipe")
    values.setdefault("target", target)
    values.setdefault("model", model)
    rw = settings_from(values)
    return build(CompareSettings, {"methods": tuple(m.strip() for m in methods.split(",") if m.strip()),
                                   "budget": budget, "seeds": seeds, "seed": seed, "oracle": oracle,
                                   "eval_split": eval_split, "reweight": rw, "recipe": recipe}, where="compare")
