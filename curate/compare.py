"""`curate compare`: every method on the same data and budget, the same fine-tuning recipe, the same evaluation.

For each seed: one base model (``--model tiny`` is built once per seed and saved, so every method and every
fine-tune starts from identical weights); for each method: reweight -> resample ``budget`` rows -> fine-tune the
base with the fixed recipe (``curate.recipe``) -> held-out loss, greedy exact-match accuracy and any plug-in
evaluations on the target's test rows, each with its per-row values (``curate.evaluate``). Each finished
(method, seed) cell is saved as JSON, so an interrupted compare resumes where it stopped. An ``oracle`` arm trains
on one named source alone, as a ceiling. The report (``evals.report``) pairs the headline method with every other
arm by test row and seed.

Progress goes to ``on_event`` as dicts with an ``"event"`` key: ``start`` (``total`` cells), ``cell`` (``arm``,
``seed``, ``index``, ``cached``), ``phase`` (``phase``: method, fine-tune or evaluate; ``total`` steps or None),
``step`` (a training step's row) and ``done`` (``arm``, ``seed``, ``wall_s``, ``status``: ok, cached or failed).
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
from curate.evaluate import Evaluations, evaluate_arm
from curate.io import write_json
from curate.modeling import TinyModel, load_model, save_base
from curate.pipeline import job_for, reweight
from curate.recipe import Recipe, finetune_arm, resolved_steps, save_for_eval
from curate.runs import CompareFolder, RunFolder
from curate.settings import ReweightSettings

__all__ = ["DEFAULT_METHODS", "CompareSettings", "Recipe", "compare"]

Event = Callable[[dict[str, Any]], None]
BUILT_IN_METRICS = ("target_loss", "accuracy")

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("uniform", "temperature", "less", "rho", "doremi", "scalebio")


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
    main_metric: str = "target_loss"
    """The metric the verdict is about: target_loss (smooth, ranks methods with few seeds), accuracy, judge, or
    an lm-eval ``task/metric``."""
    evaluations: Evaluations = field(default_factory=Evaluations)
    proxy_model: str | None = None
    """``--proxy-model DIR|tiny``: every method learns its weights or scores with this model, and every arm is
    still fine-tuned and evaluated from ``--model`` (``reweight.model``)."""
    also_full: bool = False
    """With ``proxy_model``: also run each model-based method learned on ``--model`` itself, as arm ``<m>@full``,
    so the transfer gap is measured."""

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in methods.METHODS]
        if bad:
            raise ValueError(f"--methods: {bad[0]!r} is not one of {', '.join(methods.names())}")
        if self.also_full and self.proxy_model is None:
            raise ValueError("--also-full: needs --proxy-model (it adds the methods learned on --model itself)")
        if self.seeds < 1 or self.budget < 1:
            raise ValueError("--seeds and --budget must be >= 1")
        self.check_methods()
        self.check_main_metric()

    def check_main_metric(self) -> None:
        """Refuse a main metric no evaluation will produce, before any arm trains."""
        ev = self.evaluations
        known = [*BUILT_IN_METRICS, *(["judge"] if ev.judge is not None else [])]
        if self.main_metric in known or any(self.main_metric.startswith(f"{t}/") for t in ev.lm_eval):
            return
        tasks = ", ".join(f"{t}/<metric>" for t in ev.lm_eval)
        raise ConfigError(f"main_metric={self.main_metric}: no evaluation gives it; use one of "
                          f"{', '.join(known)}{', ' + tasks if tasks else ''} (judge needs --judge URL, "
                          "task metrics --eval lm-eval:TASK)")

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


def compare(db: Path, settings: CompareSettings, out_dir: Path, *, on_event: Event | None = None) -> dict[str, Any]:
    """Run (or resume) the comparison and write the report; returns the results dict given to the report.

    Progress goes to ``on_event`` (see the module docstring) and to the ``curate.compare`` logger."""
    from evals.report import write_report

    emit = on_event or (lambda event: None)
    folder = CompareFolder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _jsonable(settings)
    if settings.evaluations.judge is not None:  # config.json is kept and shared: no user:password@ in it
        from evals.judge import scrub_url

        config["evaluations"]["judge"]["url"] = scrub_url(settings.evaluations.judge.url)
    config_hash = cell_hash(config)
    write_json(folder.config, {**config, "config_hash": config_hash})
    test = _eval_rows(db, settings.eval_split)
    if settings.oracle:
        _check_oracle(db, settings.oracle)
    arms = list(settings.methods) + [f"{m}{FULL}" for m in settings.methods if settings.also_full
                                     and "model" in methods.get(m).needs] + (["oracle"] if settings.oracle else [])
    seeds = range(settings.seed, settings.seed + settings.seeds)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in arms}
    failed: dict[str, list[str]] = {}
    failed_evals: dict[str, list[str]] = {}
    emit({"event": "start", "total": len(arms) * len(seeds), "arms": arms, "seeds": list(seeds)})
    for seed in seeds:
        bases = _bases(db, settings, folder, seed)
        resolved = replace(settings, reweight=replace(settings.reweight, max_len=bases.max_len))
        for arm in arms:
            done = _cell(db, resolved, arm, seed, bases, test, folder, config_hash, emit)
            if done.get("failed"):
                failed.setdefault(arm, []).append(f"seed {seed}: {done['failed']}")
                log.warning("%s seed %d failed: %s", arm, seed, done["failed"])
                continue
            for what, reason in (done.get("failed_evals") or {}).items():
                failed_evals.setdefault(arm, []).append(f"seed {seed} {what}: {reason}")
            results[arm].append({k: v for k, v in done.items() if k not in ("config_hash", "failed_evals")})
    results = {arm: runs for arm, runs in results.items() if runs}
    if not results:
        raise DataError("compare: every cell failed (" + "; ".join(f"{a} {r[0]}" for a, r in failed.items())
                        + "); fix the settings the messages name and run the same command again")
    report = _report(settings, results, test, {"failed": failed, "failed_evals": failed_evals})
    write_report(report, out_dir)
    return report


FULL = "@full"
"""Suffix of an arm whose method learned on ``--model`` while the others used ``--proxy-model``."""
REPORT_ONLY = ("methods", "seeds", "seed", "main_metric", "also_full")
"""Settings that change which cells run or how they are reported, never a cell's own numbers."""


def cell_hash(config: dict[str, Any]) -> str:
    """The key a cached cell is reused under: every setting that can change one (arm, seed) cell's numbers, so
    adding a seed or a method, or switching the main metric, reuses every cell already finished."""
    keep = {k: v for k, v in config.items() if k not in REPORT_ONLY}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Bases:
    """One seed's starting points: the base every arm fine-tunes (and its ``max_len``), and with
    ``--proxy-model`` the proxy the methods learn with (and the proxy's own ``max_len``: its tokenizer may
    differ)."""

    base: Path
    max_len: int
    proxy: Path | None = None
    proxy_len: int | None = None

    def learner(self, arm: str) -> tuple[Path, int]:
        """The model an arm's method learns with, and its ``max_len``."""
        if self.proxy is None or arm.endswith(FULL):
            return self.base, self.max_len
        return self.proxy, int(self.proxy_len or self.max_len)


def _bases(db: Path, settings: CompareSettings, folder: CompareFolder, seed: int) -> Bases:
    base, max_len = _base_model(db, settings, folder.base(seed), seed)
    if settings.proxy_model is None:
        return Bases(base, max_len)
    proxy_settings = replace(settings, reweight=replace(settings.reweight, model=settings.proxy_model))
    proxy, proxy_len = _base_model(db, proxy_settings, folder.proxy_base(seed), seed)
    return Bases(base, max_len, proxy, proxy_len)


def _cell(db: Path, settings: CompareSettings, arm: str, seed: int, base: Bases, test: Rows, folder: CompareFolder,
          config_hash: str, emit: Event) -> dict[str, Any]:
    """One (arm, seed) cell: the cached one when it finished under the same settings, else run and cache it."""
    path = folder.cell(arm, seed)
    done = json.loads(path.read_text()) if path.exists() else {}
    # a finished cell is reused only under the same settings, and a failed one (or a failed evaluation) never
    cached = done.get("config_hash") == config_hash and not done.get("failed") and not done.get("failed_evals")
    emit({"event": "cell", "arm": arm, "seed": seed, "cached": cached})
    if not cached:
        done = {**_checked_cell(db, settings, arm, seed, base, test, folder, emit), "config_hash": config_hash}
        write_json(path, done)
    status = "failed" if done.get("failed") else "cached" if cached else "ok"
    emit({"event": "done", "arm": arm, "seed": seed, "status": status,
          "wall_s": (done.get("cost") or {}).get("wall_s")})
    return done


def _report(settings: CompareSettings, results: dict[str, list[dict[str, Any]]], test: Rows,
            meta: dict[str, Any]) -> dict[str, Any]:
    """The results dict :func:`evals.report.write_report` reads (``evals.report.RESULTS``)."""
    arms = list(results)
    directions: dict[str, str] = {}
    for runs in results.values():
        for run in runs:
            directions.update(run.pop("directions", None) or {})
    main = settings.main_metric
    if not any(main in run["metrics"] for runs in results.values() for run in runs):
        meta["notes"] = [f"main_metric={main}: no arm has it (see failed_evals); the verdict is on target_loss"]
        log.warning(meta["notes"][0])
        main = "target_loss"
    learned = [a for a in arms if not a.endswith(FULL) and a != "oracle"] or arms  # with a proxy: the proxy's
    headline_method = "scalebio" if "scalebio" in arms else learned[-1]
    others = [a for a in arms if a not in (headline_method, "oracle")]
    return {"methods": results, "baseline": "uniform" if "uniform" in arms else (others or arms)[0],
            "headline_method": headline_method, "oracle": "oracle" if "oracle" in arms else None,
            "main_metric": main, "directions": directions,
            "target": f"{settings.reweight.target} -> {settings.eval_split} split ({len(test)} rows)",
            "meta": {"budget": settings.budget, "recipe": _jsonable(settings.recipe), "oracle": settings.oracle,
                     "seeds": settings.seeds, **_models(settings, meta)}}


def _models(settings: CompareSettings, meta: dict[str, Any]) -> dict[str, Any]:
    """The report's models, and with a proxy the note that says what crosses from it to ``--model``."""
    out = {**meta, "model": settings.reweight.model}
    if settings.proxy_model is not None:
        out["proxy_model"] = settings.proxy_model
        full = f"; arms ending in {FULL} learned on {settings.reweight.model} itself" if settings.also_full else ""
        out["notes"] = [*meta.get("notes", []),
                        f"methods learned with the proxy {settings.proxy_model}; every arm was fine-tuned and "
                        f"evaluated from {settings.reweight.model}{full}. The two tokenizers may differ: weights "
                        "are per source or group and scores per example id, so nothing token-level crosses over"]
    return out


def _checked_cell(db: Path, settings: CompareSettings, arm: str, seed: int, base: Bases, test: Rows,
                  folder: CompareFolder, emit: Event) -> dict[str, Any]:
    """One cell, or ``{"seed", "failed": reason}`` when its method or fine-tune stops on the data (a NaN loss, a
    source left without rows) or a metric comes out non-finite: the other arms still run and report."""
    try:
        cell = _run_cell(db, settings, arm, seed, base, test, folder.run(arm, seed), folder.run_id(arm, seed),
                         emit)
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
    from curate.corpus import load_run_data
    from curate.modeling import load_tokenizer, max_positions
    from curate.tokens import resolve_max_len

    rw = settings.reweight
    tiny = TinyModel(**rw.tiny) if rw.tiny else TinyModel()
    data = load_run_data(db, rw.target, stream_above=rw.stream_above)  # the rows reweight sees, read the same way
    try:
        assert data.pool is not None
        built = (dest.base_model / "config.json").exists()
        spec = str(dest.base_model) if built else rw.model
        tok = load_tokenizer(spec, [data.pool, data.target], rw.template, tiny)
        max_len, _ = resolve_max_len(rw.max_len, tok, data.pool, data.target, rw.template, max_positions(spec))
    finally:
        data.close()
    if built:
        return dest.base_model, max_len
    model = load_model(rw.model, tok, seed=seed, max_len=max_len, tiny=tiny)
    return save_base(dest.root, model, tok), max_len


def _run_cell(db: Path, settings: CompareSettings, arm: str, seed: int, bases: Bases, test: Rows, run: RunFolder,
              run_id: str, emit: Event) -> dict[str, Any]:
    start = time.perf_counter()
    step: Event = lambda row: emit({"event": "step", **row})  # noqa: E731
    method = arm.removesuffix(FULL)
    if arm == "oracle":
        run.root.mkdir(parents=True, exist_ok=True)
        weights, trajectory = _oracle(db, settings.oracle or "", run, settings.budget, seed), None
    else:
        learner, max_len = bases.learner(arm)
        rw = replace(settings.reweight, method=method, seed=seed, model=str(learner), max_len=max_len,
                     budget=settings.budget)
        job = job_for(db, rw, run.root, run_id, overwrite=True)  # overwrite: a stale cell's run
        emit({"event": "phase", "phase": "method", "total": job.total_steps})
        outcome = reweight(job, on_step=step)
        weights = outcome.weights if outcome is not None else {}  # one process: always the writer
        trajectory = _trajectory(run) if method == "scalebio" else None
    method_s = time.perf_counter() - start
    scores, tokens = _train_and_eval(settings, bases.base, run, test, seed, emit)
    cell = {"seed": seed, "weights": weights, "metrics": scores.metrics, "per_example": scores.per_example,
            "directions": scores.directions,
            "cost": {"wall_s": round(time.perf_counter() - start, 2), "method_s": round(method_s, 2),
                     "tokens": tokens}}
    if scores.failed:
        cell["failed_evals"] = scores.failed
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


def _train_and_eval(settings: CompareSettings, base: Path, run: RunFolder, test: Rows, seed: int,
                    emit: Event) -> tuple[Any, int]:
    """Fine-tune the base on the arm's resampled rows with the recipe, then evaluate it on the test rows."""
    rw, recipe = settings.reweight, settings.recipe
    rows = read_parquet_rows(run.data_files())
    emit({"event": "phase", "phase": "fine-tune", "total": resolved_steps(recipe, len(rows))})
    model, tok, tokens = finetune_arm(rw, recipe, base, rows, seed, on_step=lambda row: emit({"event": "step", **row}))
    emit({"event": "phase", "phase": "evaluate", "total": None})
    scores = evaluate_arm(model, tok, test, max_len=int(rw.max_len), template=rw.template,  # resolved in compare()
                          truncation=rw.truncation, eval_rule=recipe.eval_rule, eval_limit=recipe.eval_limit,
                          max_new_tokens=recipe.max_new_tokens, evaluations=settings.evaluations,
                          save_model=lambda: save_for_eval(model, tok, run.root / "model"))
    return scores, tokens


def _jsonable(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj
