"""`curate compare`: every method on the same data and budget, the same fine-tuning recipe, the same evaluation.

For each seed: one base model (``--model tiny`` is built once per seed and saved, so every method and every
fine-tune starts from identical weights); for each method: reweight -> resample ``budget`` rows -> fine-tune the
base with the fixed recipe -> held-out loss and greedy exact-match accuracy on the target's test rows. Each finished
(method, seed) cell is saved as JSON, so an interrupted compare resumes where it stopped. An ``oracle`` arm trains
on one named source alone, as a ceiling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curate import methods
from curate.corpus import Rows, load_split, read_parquet_rows
from curate.db import open_db
from curate.errors import ConfigError, CurateError, DataError
from curate.io import write_json
from curate.modeling import TinyModel, load_model, save_base, tokenize
from curate.pipeline import job_for, reweight
from curate.runs import CompareFolder, RunFolder
from curate.settings import ReweightSettings

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("uniform", "temperature", "less", "rho", "doremi", "scalebio")


@dataclass(frozen=True)
class Recipe:
    """The one fine-tuning recipe every method's data is trained with."""

    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 16
    eval_rule: str = "last_number"
    eval_limit: int = 200
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        from evals.extract import RULES

        if self.steps <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ValueError("recipe steps, batch_size and lr must be > 0")
        if self.eval_rule not in RULES:
            raise ValueError(f"recipe.eval_rule: {self.eval_rule!r} is not one of {', '.join(RULES)}")
        if self.eval_limit < 1 or self.max_new_tokens < 1:
            raise ValueError("recipe.eval_limit and recipe.max_new_tokens must be >= 1")


@dataclass(frozen=True)
class CompareSettings:
    """What to compare and how."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    seed: int = 0
    """The first seed; the seeds run are ``seed .. seed + seeds - 1``."""
    budget: int = 1000
    oracle: str | None = None
    eval_split: str = "test"
    reweight: ReweightSettings = field(default_factory=ReweightSettings)
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in methods.METHODS]
        if bad:
            raise ValueError(f"--methods: {bad[0]!r} is not one of {', '.join(methods.names())}")
        if self.seeds < 1 or self.budget < 1:
            raise ValueError("--seeds and --budget must be >= 1")
        self.check_methods()

    def check_methods(self) -> None:
        """Build every method's config now, so a bad key stops compare before the first arm trains.

        Raises:
            ConfigError: a top-level ``steps`` or method key (compare runs several methods, so each key must
                name its method), or a key a method does not have.
        """
        from curate.settings import method_config

        rw = self.reweight
        if rw.steps is not None:
            keys = ", ".join(f"{m.name}.{m.step_key}" for m in methods.METHODS.values() if m.step_key)
            raise ConfigError(f"steps={rw.steps}: compare runs several methods; give each its own ({keys})")
        if rw.method_args:
            key = next(iter(rw.method_args))
            raise ConfigError(f"{key}={rw.method_args[key]}: compare runs several methods; write it under the "
                              f"method it belongs to (e.g. scalebio.{key}=...)")
        for name in self.methods:
            method_config(replace(rw, method=name))


def compare(db: Path, settings: CompareSettings, out_dir: Path, *,
            on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the comparison and write the report; returns the results dict given to the report.

    Progress goes to the ``curate.compare`` logger (one line per cell)."""
    from evals.report import write_report

    folder = CompareFolder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _jsonable(settings)
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    write_json(folder.config, {**config, "config_hash": config_hash})
    test = _eval_rows(db, settings.eval_split)
    if settings.oracle:
        _check_oracle(db, settings.oracle)
    arms = list(settings.methods) + (["oracle"] if settings.oracle else [])
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in arms}
    failed: dict[str, list[str]] = {}
    for seed in range(settings.seed, settings.seed + settings.seeds):
        base, max_len = _base_model(db, settings, folder.base(seed), seed)
        for arm in arms:
            cell = folder.cell(arm, seed)
            done = json.loads(cell.read_text()) if cell.exists() else {}
            # a finished cell is reused only under the same settings, and a failed one never
            if done.get("config_hash") != config_hash or done.get("failed"):
                log.info("seed %d: %s", seed, arm)
                resolved = replace(settings, reweight=replace(settings.reweight, max_len=max_len))
                done = {**_checked_cell(db, resolved, arm, seed, base, test, folder, on_step),
                        "config_hash": config_hash}
                write_json(cell, done)
            if done.get("failed"):
                failed.setdefault(arm, []).append(f"seed {seed}: {done['failed']}")
                log.warning("%s seed %d failed: %s", arm, seed, done["failed"])
                continue
            results[arm].append({k: v for k, v in done.items() if k != "config_hash"})
    results = {arm: runs for arm, runs in results.items() if runs}
    if not results:
        raise DataError("compare: every cell failed (" + "; ".join(f"{a} {r[0]}" for a, r in failed.items())
                        + "); fix the settings the messages name and run the same command again")
    report = {"methods": results, "baseline": "uniform" if "uniform" in arms else arms[0],
              "headline_method": "scalebio" if "scalebio" in arms else arms[-1], "main_metric": "accuracy",
              "target": f"{settings.reweight.target} -> {settings.eval_split} split ({len(test)} rows)",
              "meta": {"budget": settings.budget, "recipe": _jsonable(settings.recipe), "oracle": settings.oracle,
                       "failed": failed}}
    write_report(report, out_dir)
    return report


def _checked_cell(db: Path, settings: CompareSettings, arm: str, seed: int, base: Path, test: Rows,
                  folder: CompareFolder, on_step: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """One cell, or ``{"seed", "failed": reason}`` when its method or fine-tune stops on the data (a NaN loss, a
    source left without rows) or a metric comes out non-finite: the other arms still run and report."""
    try:
        cell = _run_cell(db, settings, arm, seed, base, test, folder.run(arm, seed), folder.run_id(arm, seed),
                         on_step)
    except (CurateError, FloatingPointError) as e:
        return {"seed": seed, "failed": str(e)}
    bad = [k for k, v in cell["metrics"].items() if not (isinstance(v, int | float) and math.isfinite(v))]
    if bad:
        return {"seed": seed, "failed": f"{', '.join(bad)} is not finite ({cell['metrics'][bad[0]]})"}
    return cell


def _check_oracle(db: Path, source: str) -> None:
    from curate.db import sources_in

    with open_db(db, read_only=True) as con:
        known = sources_in(con, "train")
    if source not in known:
        raise ConfigError(f"--oracle: {source!r} is not a training source ({', '.join(sorted(known))})")


def _eval_rows(db: Path, split: str) -> Rows:
    with open_db(db, read_only=True) as con:
        rows = load_split(con, split)
    if len(rows) == 0:
        raise ConfigError(f"--eval-split: no {split!r} rows stored; ingest held-out target rows with --split {split}")
    return rows


def _base_model(db: Path, settings: CompareSettings, dest: RunFolder, seed: int) -> tuple[Path, int]:
    """One saved base model per seed (built from --model), shared by every arm, and the ``max_len`` every arm's
    reweight, fine-tune and evaluation use (``auto`` resolved once, on the same rows reweight sees)."""
    from curate.corpus import load_pool_and_target
    from curate.modeling import load_tokenizer, max_positions
    from curate.tokens import resolve_max_len

    rw = settings.reweight
    tiny = TinyModel(**rw.tiny) if rw.tiny else TinyModel()
    with open_db(db, read_only=True) as con:
        pool, target = load_pool_and_target(con, rw.target)
    built = (dest.base_model / "config.json").exists()
    spec = str(dest.base_model) if built else rw.model
    tok = load_tokenizer(spec, [pool, target], rw.template, tiny)
    max_len, _ = resolve_max_len(rw.max_len, tok, pool, target, rw.template, max_positions(spec))
    if built:
        return dest.base_model, max_len
    model = load_model(rw.model, tok, seed=seed, max_len=max_len, tiny=tiny)
    return save_base(dest.root, model, tok), max_len


def _run_cell(db: Path, settings: CompareSettings, arm: str, seed: int, base: Path, test: Rows, run: RunFolder,
              run_id: str, on_step: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    start = time.perf_counter()
    if arm == "oracle":
        run.root.mkdir(parents=True, exist_ok=True)
        weights, trajectory = _oracle(db, settings.oracle or "", run, settings.budget, seed), None
    else:
        rw = replace(settings.reweight, method=arm, seed=seed, model=str(base), budget=settings.budget)
        outcome = reweight(job_for(db, rw, run.root, run_id, overwrite=True), on_step=on_step)  # a stale cell's run
        weights = outcome.weights if outcome is not None else {}  # one process: always the writer
        trajectory = _trajectory(run) if arm == "scalebio" else None
    method_s = time.perf_counter() - start
    metrics, tokens = _train_and_eval(settings, base, run, test, seed)
    cell = {"seed": seed, "weights": weights, "metrics": metrics,
            "cost": {"wall_s": round(time.perf_counter() - start, 2), "method_s": round(method_s, 2),
                     "tokens": tokens}}
    if trajectory:
        cell["trajectory"] = trajectory
    return cell


def _oracle(db: Path, source: str, run: RunFolder, budget: int, seed: int) -> dict[str, float]:
    from curate.db import data_fingerprint, sources_in
    from curate.resample import resample
    from curate.weights import build_weights_doc, write_weights

    with open_db(db, read_only=True) as con:
        counts = sources_in(con, "train")
        weights = {s: (1.0 if s == source else 0.0) for s in sorted(counts)}
        write_weights(run.weights, build_weights_doc("oracle", weights, counts=counts, target=source,
                                                     config_hash="", data_fingerprint=data_fingerprint(con)))
        resample(con, run.root, budget=budget, seed=seed)
    return weights


def _trajectory(run: RunFolder) -> list[dict[str, Any]] | None:
    path = run.trajectory
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    keep = max(1, len(rows) // 100)
    return [{k: v for k, v in r.items() if k == "step" or k.startswith("p_")} for r in rows[::keep]]


def _train_and_eval(settings: CompareSettings, base: Path, run: RunFolder, test: Rows,
                    seed: int) -> tuple[dict[str, float], int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.modeling import quiet_hf
    from evals.harness import generation_accuracy, heldout_loss
    from solvers.sft import finetune

    quiet_hf()

    rw, recipe = settings.reweight, settings.recipe
    max_len = int(rw.max_len)  # compare() resolved auto before the cells ran
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    train_rows = read_parquet_rows(run.data_files())
    sources = sorted(set(train_rows.sources))
    data = tokenize(train_rows, tok, sources, max_len, rw.template, rw.truncation)
    model, history = finetune(model, data, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                              seed=seed)
    test_sources = sorted(set(test.sources))
    loss = heldout_loss(model, tokenize(test, tok, test_sources, max_len, rw.template, rw.truncation),
                        batch_size=32)
    n = min(len(test), recipe.eval_limit)
    # the generation prefix is cut as in training (the prompt's start goes first), leaving room for the answer
    prefix = max(max_len // 2, max_len - recipe.max_new_tokens)
    acc = generation_accuracy(model, tok, test.prompts[:n], test.responses[:n], recipe.eval_rule,  # type: ignore[arg-type]
                              template=rw.template, max_new_tokens=recipe.max_new_tokens, max_prompt_len=prefix)
    tokens = int(sum(history.get("n_tokens", [])))  # trained (response) tokens, the fine-tune's real cost
    return {"accuracy": acc["accuracy"], "target_loss": loss["loss"], "ppl": loss["ppl"]}, tokens


def _jsonable(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj
