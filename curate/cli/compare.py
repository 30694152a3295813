"""`curate compare`: run the methods on the same data and budget, fine-tune, evaluate and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli._common import DEFAULT_DB, ConfigPath, Db, JsonLogs, Out, Quiet, guarded, out
from curate.cli.progress import compare_progress
from curate.compare import DEFAULT_METHODS, CompareSettings, Recipe
from curate.compare import compare as run_compare
from curate.config import build, load_config
from curate.errors import ConfigError, require
from curate.evaluate import Evaluations
from curate.runs import safe_out_dir
from curate.settings import settings_from


def register(app: typer.Typer) -> None:
    from curate.cli.reweight import METHOD_KEYS

    app.command("compare", epilog="Every method's own key is written under its name here (scalebio.alpha=10, "
                "rho.reference_steps=50); recipe.* sets the fine-tune (recipe.steps, recipe.lr, recipe.eval_rule, "
                "recipe.lora=true); main_metric= picks the verdict's metric (target_loss, accuracy, judge, or an "
                "lm-eval task/metric); judge.* sets the judge (judge.model, judge.timeout_s, judge.api_key_env). "
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
    proxy_model: Annotated[str | None, typer.Option(
        "--proxy-model", help="Learn every method's weights or scores with this smaller model ('tiny' or a "
                              "folder); every arm is still fine-tuned and evaluated from --model.")] = None,
    also_full: Annotated[bool, typer.Option(
        "--also-full", help="With --proxy-model: also learn each model-based method on --model itself "
                            "(arms <method>@full), to measure the transfer gap.")] = False,
    eval_: Annotated[list[str] | None, typer.Option(
        "--eval", help="Extra evaluation, e.g. lm-eval:TASK\\[,TASK] (pip install 'curate\\[lmeval]').")] = None,
    eval_include: Annotated[Path | None, typer.Option(help="Folder of local lm-eval task YAMLs.")] = None,
    judge: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint (…/v1) that grades each arm's answers 1-10; key from "
             "$CURATE_JUDGE_API_KEY.")] = None,
    config: ConfigPath = None,
    db: Db = DEFAULT_DB,
    out_dir: Out = None,
    quiet: Quiet = False,
    json_logs: JsonLogs = False,
) -> None:
    """Which data trains the best model for my target? Every method, same budget, same recipe, same eval."""
    values = load_config(config, overrides or [])
    values["evaluations"] = evaluations_for(values, eval_ or [], eval_include, judge)
    settings = settings_for(values, methods, budget, seeds, target, eval_split, model, oracle, seed,
                            proxy_model=proxy_model, also_full=also_full)
    dest = safe_out_dir(out_dir, "compare")
    with compare_progress(quiet, json_logs) as on_event:
        report = run_compare(db, settings, dest, on_event=on_event)
    print_summary(report, title="curate compare", report_path=dest / "report.html")


def evaluations_for(values: dict, specs: list[str], include: Path | None, judge_url: str | None) -> Evaluations:
    """The plug-in evaluations from ``--eval``, ``--eval-include``, ``--judge`` and the ``judge.*`` keys."""
    from evals.lmeval import parse_eval_spec

    tasks: list[str] = []
    for spec in specs:
        try:
            tasks += parse_eval_spec(spec)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if tasks:  # refused now, not after the first arm has fine-tuned
        require("lm_eval", "lmeval")
    if include is not None and not include.is_dir():
        raise ConfigError(f"--eval-include {include}: no such folder; give the folder holding the task YAMLs")
    judge_keys = values.pop("judge", None) or {}
    if judge_keys and not judge_url:
        raise ConfigError("judge.* keys given without --judge URL; add --judge http://host:port/v1")
    judge = None
    if judge_url:
        from evals.judge import JudgeSettings

        judge = build(JudgeSettings, {"url": judge_url, **judge_keys}, where="judge")
    return Evaluations(lm_eval=tuple(tasks), lm_eval_include=str(include) if include else None, judge=judge)


def print_summary(report: dict, title: str, report_path: Path) -> None:
    """The comparison table, the one-line verdict and where the report is."""
    from evals.report import build_summary, headline, rich_table

    summary = build_summary(report)
    out.print(rich_table(summary, title=title, caption=False))
    out.print(headline(summary))
    out.print(f"report: {report_path}")


def settings_for(values: dict, methods: str, budget: int, seeds: int, target: str, eval_split: str, model: str,
                 oracle: str | None, seed: int = 0, *, proxy_model: str | None = None,
                 also_full: bool = False) -> CompareSettings:
    """Merge CLI flags and a config into CompareSettings (``recipe.*`` and reweight keys may come from either)."""
    recipe = build(Recipe, values.pop("recipe", {}) or {}, where="recipe")
    evaluations = values.pop("evaluations", None) or Evaluations()
    extra = {k: values.pop(k) for k in ("main_metric",) if k in values}
    values.setdefault("target", target)
    values.setdefault("model", model)
    rw = settings_from(values)
    return build(CompareSettings, {"methods": tuple(m.strip() for m in methods.split(",") if m.strip()),
                                   "budget": budget, "seeds": seeds, "seed": seed, "oracle": oracle,
                                   "eval_split": eval_split, "reweight": rw, "recipe": recipe,
                                   "evaluations": evaluations, "proxy_model": proxy_model,
                                   "also_full": also_full, **extra}, where="compare")
