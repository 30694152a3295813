"""`curate reweight` as a sequence of stages, each a named function in the module that owns it::

    job = prepare(request)                 # curate.pipeline: settings, method config, launcher; checked first
    data = load_run_data(db, target)       # curate.corpus: the pool and target, read-only
    begin_run(job, resolved)               # curate.runs + curate.history: config.yaml, the "running" record
    inputs = load_inputs(job, data)        # curate.modeling + curate.tokens: model, tokenized sets (if needed)
    result = method.fit(inputs)            # curate.methods: one typed FitResult for every method
    doc = write_artefacts(job, ...)        # curate.weights + curate.runs: weights.json, trajectory, scores, manifest
    record_finish(...)                     # curate.history: the runs/weights/scores tables
    resample(...)                          # curate.resample: RUN/data when --budget is set

The store is opened read-only while data is read and only for a moment to record the run, never while a model
trains, so other commands can use the database meanwhile. Every method ends in the same run folder (DESIGN.md §4).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate import history, methods
from curate.config import build, load_config, to_dict
from curate.corpus import PoolLike, Rows, RunData, load_run_data
from curate.errors import ConfigError, Interrupted, require
from curate.launch import Launch, plan_launch, resolve_device
from curate.methods import FitInputs, FitResult, Method
from curate.runs import (
    DEFAULT_STORE,
    RunFolder,
    read_config,
    safe_out_dir,
    store_for,
    update_manifest,
    write_config,
    write_result_files,
)
from curate.settings import ReweightSettings, method_config, settings_from, settings_to_values
from curate.tokens import TokenReport, resolve_max_len, tokenize_run
from curate.weights import build_weights_doc, by_source, normalise, write_weights
from solvers.common import StepCallback

if TYPE_CHECKING:
    from curate.resample import ResampleResult

FLAGS = ("method", "target", "model", "steps", "budget", "max_epochs", "lower_level", "group_by")
"""Command-line flags that override the config's key of the same name."""


@dataclass(frozen=True)
class ReweightRequest:
    """One ``curate reweight`` command line, as parsed: nothing checked or resolved yet."""

    db: Path | None
    """``--db``; None: ``curate.duckdb``, or for ``--resume`` the store the run was made from."""
    args: tuple[str, ...] = ()
    """Data files to ingest first, then ``key=value`` overrides."""
    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    """The :data:`FLAGS` the user passed (None for those not given)."""
    seed: int = 0
    resume: Path | None = None
    out: Path | None = None
    launcher: str = "none"
    zero: int | None = None
    nproc: int = 1
    deepspeed_config: Path | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class Job:
    """A checked request: settings, the method and its config, where it runs and writes, what to ingest first."""

    db: Path
    settings: ReweightSettings
    method: Method
    cfg: Any
    run: RunFolder
    launch: Launch = field(default_factory=Launch)
    files: tuple[Path, ...] = ()
    target_file: Path | None = None
    resume: bool = False
    overwrite: bool = False
    """Replace a non-empty run folder whole (``--overwrite``); without it such a folder is refused."""
    run_id: str = ""
    """The id the store records (default: the run folder's name)."""

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(self, "run_id", self.run.root.name)

    @property
    def total_steps(self) -> int | None:
        """What the progress bar counts to: the method's step key, when it has one."""
        key = self.method.step_key
        return getattr(self.cfg, key, None) if key else None


@dataclass
class ReweightOutcome:
    """What a reweight run produced (rank 0's view)."""

    run_dir: Path
    method: str
    weights: dict[str, float]
    doc: dict[str, Any]
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    resampled: ResampleResult | None = None
    """The draw of ``--budget`` (allocation, the sources the epoch cap held back and their warnings)."""


def prepare(request: ReweightRequest) -> Job:
    """Check the whole command before any work: config and overrides, the method's keys, the launcher.

    Raises:
        ConfigError: one line naming the flag or key and the fix.
    """
    files = tuple(Path(a) for a in request.args if "=" not in a)
    overrides = [a for a in request.args if "=" in a]
    config = request.config if request.config is not None or request.resume is None else read_config(request.resume)
    values = load_config(config, overrides)
    values.pop("method_config", None)
    values.update({k: v for k, v in request.flags.items() if v is not None and k in FLAGS})
    values.setdefault("seed", request.seed)
    target_file = _target_file(values.get("target"))
    if target_file is not None:
        values["target"] = "val"
    settings = settings_from(values)
    method = methods.get(settings.method)
    cfg = method_config(settings)
    launch = plan_launch(request.launcher, method=method, cfg=cfg, resume=request.resume is not None,
                         ingest=bool(files or target_file), zero=request.zero, nproc=request.nproc,
                         ds_config_path=request.deepspeed_config)
    run = RunFolder(request.resume or launch.rank.run_dir or safe_out_dir(request.out, settings.method))
    if request.resume is not None:
        _check_resumable(method, run)
    elif not launch.rank.in_job and not request.overwrite:  # the launching parent checked for its ranks
        check_empty(run, "--out")
    db = request.db or (store_for(request.resume, None) if request.resume is not None else DEFAULT_STORE)
    return Job(db, settings, method, cfg, run, launch, files, target_file, request.resume is not None,
               request.overwrite)


def job_for(db: Path, settings: ReweightSettings, run_dir: Path, run_id: str = "", overwrite: bool = False) -> Job:
    """A :class:`Job` from settings built in code (``compare``, a user's script): one process, no ingest."""
    method = methods.get(settings.method)
    run = RunFolder(run_dir)
    if not overwrite:
        check_empty(run, "run_dir")
    return Job(db, settings, method, method_config(settings), run, overwrite=overwrite, run_id=run_id)


def ingest_first(job: Job) -> list[Any]:
    """``curate reweight a.jsonl --target val.jsonl``: ingest the files (the target as ``val``); the reports."""
    from curate.db import open_db
    from curate.ingest import ingest_paths

    with open_db(job.db) as con:
        reports = ingest_paths(con, list(job.files)) if job.files else []
        if job.target_file is not None:
            reports += ingest_paths(con, [job.target_file], split="val")
    return reports


def reweight(job: Job, *, on_step: StepCallback | None = None) -> ReweightOutcome | None:
    """Run the job's method and write the run folder; resample when a budget is set.

    Every rank of a ``--launcher deepspeed`` job calls this; only rank 0 writes and gets an outcome (the others
    get ``None`` after training).
    """
    start = time.perf_counter()
    data = load_run_data(job.db, job.settings.target, need_target="target" in job.method.needs,
                         need_text=job.method.reads_text, stream_above=job.settings.stream_above,
                         group_by=job.settings.group_by)
    try:
        if job.settings.budget is not None:  # a budget the pool cannot serve is refused before any training
            from curate.sampling import check_budget_fits

            check_budget_fits(job.settings.budget, data.rows, job.settings.max_epochs)
        return _fit_and_write(job, data, on_step, start)
    finally:
        data.close()  # a streamed pool's snapshot


def _fit_and_write(job: Job, data: RunData, on_step: StepCallback | None, start: float) -> ReweightOutcome | None:
    resolved = {**settings_to_values(job.settings), "method_config": to_dict(job.cfg)}
    inputs = load_inputs(job, data, on_step)  # a model that fails to load leaves no run folder behind
    created = begin_run(job, resolved, inputs)
    try:
        result = job.method.fit_fn()(inputs)
        if not job.launch.rank.writer:
            return None
        if job.method.level == "example" and not result.scores:
            raise RuntimeError(f"{job.method.name}: an example-level method returned no scores")
        if inputs.token_report is not None:
            result.diagnostics = _with_tokenization(result.diagnostics, inputs.token_report)
        seconds = time.perf_counter() - start
        doc = write_artefacts(job, data, resolved, result, seconds, tokenizer=inputs.tokenizer)
    except BaseException as e:
        _record_failure(job, e)
        raise
    history.record_finish(job.db, job.run_id, job.settings.method, resolved, job.run.root, created,
                          doc["sources"], [(r.step, r.weights) for r in result.trajectory], result.scores)
    drawn = resample_run(job) if job.settings.budget is not None else None
    return ReweightOutcome(job.run.root, job.settings.method, doc["sources"], doc, seconds, result.diagnostics,
                           drawn)


def begin_run(job: Job, resolved: dict[str, Any], inputs: FitInputs) -> str:
    """Create the run folder (``--overwrite``: replace the old one whole), save ``config.yaml`` (a resumed run
    keeps the one it started with), the store's path and the base model, and record the run as running; returns
    its start time. Only rank 0 writes."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    if not job.launch.rank.writer:
        return now
    if job.overwrite and not job.resume and job.run.root.exists():
        shutil.rmtree(job.run.root)
    job.run.root.mkdir(parents=True, exist_ok=True)
    if not job.resume:
        write_config(job.run.root, resolved)
        update_manifest(job.run.root, kind="reweight", method=job.settings.method, db=str(job.db.resolve()))
        if inputs.model is not None:
            from curate.modeling import save_base

            save_base(job.run.root, inputs.model, inputs.tokenizer)
    if not job.launch.distributed:  # other ranks are reading the store now; rank 0 records at the end
        history.record_start(job.db, job.run_id, job.settings.method, resolved, job.run.root)
    return now


def load_inputs(job: Job, data: RunData, on_step: StepCallback | None) -> FitInputs:
    """The method's inputs; for a model-based method also the tokenizer, ``max_len``, the tokenized pool and target
    and the model. Writes nothing."""
    s = job.settings
    inputs = FitInputs(s.method, job.cfg, dict(data.counts), data.pool, data.target, job.run, seed=s.seed,
                       on_step=on_step, resume=job.resume, zero_stage=job.launch.zero_stage,
                       ds_config=job.launch.ds_config, save_model=s.save_model)
    if "torch" in job.method.needs:
        require("torch", "train")
    if "model" not in job.method.needs:
        return inputs
    spec = str(job.run.base_model) if job.resume and job.run.base_model.is_dir() else s.model
    assert data.pool is not None  # read for every method that needs a model
    inputs.model, inputs.tokenizer, inputs.train, inputs.target_set, inputs.token_report = load_and_tokenize(
        s, spec, data.pool, data.target, data.sources)
    inputs.device = resolve_device(s.device)
    return inputs


def load_and_tokenize(settings: ReweightSettings, spec: str, pool: PoolLike, target: Rows,
                      sources: list[str]) -> tuple[Any, Any, Any, Any, TokenReport]:
    """The tokenizer, ``max_len`` (resolved when ``auto``), the tokenized pool and target, then the model sized
    for that length. Refuses (exit 2) a source or target with no usable row before any model is built."""
    from curate.modeling import TinyModel, load_model, load_tokenizer, max_positions

    tiny = build(TinyModel, settings.tiny, where="tiny")
    tok = load_tokenizer(spec, [pool, target], settings.template, tiny)
    max_len, chosen = resolve_max_len(settings.max_len, tok, pool, target, settings.template, max_positions(spec))
    train, tgt, report = tokenize_run(pool, target, tok, sources, max_len, settings.template, settings.truncation,
                                      chosen)
    model = load_model(spec, tok, seed=settings.seed, max_len=max_len, tiny=tiny)
    return model, tok, train, tgt, report


def write_artefacts(job: Job, data: RunData, resolved: dict[str, Any], result: FitResult, seconds: float,
                    tokenizer: Any = None) -> dict[str, Any]:
    """``weights.json``, the trajectory, scores and diagnostics, the final model when asked, and the manifest;
    returns the weights document."""
    config_hash = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
    weights, counts, averaged = normalise(result.weights), data.counts, result.averaged
    extra: dict[str, Any] = {"diagnostics": result.diagnostics}
    if data.group_source is not None:  # --group-by: the groups' weights, and per source their sums
        extra.update(group_by=job.settings.group_by, groups=weights, group_counts=dict(counts),
                     group_sources=dict(data.group_source))
        weights, counts = by_source(weights, data.group_source), by_source(counts, data.group_source)
        averaged = by_source(averaged, data.group_source) if averaged else averaged
    doc = build_weights_doc(job.settings.method, weights, counts=counts, target=job.settings.target,
                            config_hash=config_hash, data_fingerprint=data.fingerprint, averaged=averaged,
                            extra=extra)
    write_weights(job.run.weights, doc)
    write_result_files(job.run, result)
    if job.settings.save_model and hasattr(result.model, "save_pretrained") and not job.launch.distributed:
        from curate.modeling import save_pretrained

        save_pretrained(job.run.model, result.model, tokenizer)
    update_manifest(job.run.root, kind="reweight", method=job.settings.method, seed=job.settings.seed,
                    data_fingerprint=data.fingerprint, rows={"pool": data.rows, "target": len(data.target)},
                    counts=data.counts, seconds=round(seconds, 3))
    return doc


def resample_run(job: Job) -> ResampleResult:
    """``--budget N``: draw the run's dataset right after learning, at most ``max_epochs`` passes per source."""
    from curate.db import open_db
    from curate.resample import resample

    with open_db(job.db, read_only=True) as con:
        return resample(con, job.run.root, budget=int(job.settings.budget or 0), seed=job.settings.seed,
                        max_epochs=job.settings.max_epochs)


def _with_tokenization(diagnostics: dict[str, Any], report: TokenReport) -> dict[str, Any]:
    out = dict(diagnostics or {})
    out["tokenization"] = report.to_dict()
    out["warnings"] = list(out.get("warnings") or []) + report.warnings
    return out


def _record_failure(job: Job, error: BaseException) -> None:
    if not job.launch.rank.writer or job.launch.distributed:
        return
    status = "interrupted" if isinstance(error, KeyboardInterrupt | Interrupted) else "failed"
    try:
        history.record_status(job.db, job.run_id, status)
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        pass


def check_empty(run: RunFolder, flag: str) -> None:
    """Refuse to write a run into a folder that already holds files: its old ``data/`` would no longer match
    the new weights, and a folder curate did not write is not curate's to fill."""
    if run.root.is_dir() and any(run.root.iterdir()):
        what = "a previous run" if run.weights.exists() or run.config.exists() else "files curate did not write"
        raise ConfigError(f"{flag}: {run.root} already holds {what}; pass --overwrite to replace it whole, "
                          "or another --out")


def _check_resumable(method: Method, run: RunFolder) -> None:
    if not method.resumable:
        raise ConfigError(f"--resume: {method.name} runs are not resumable; start a new run")
    if not run.checkpoints.exists() or not any(run.checkpoints.iterdir()):
        raise ConfigError(f"--resume: {run.root} stopped before its first checkpoint (checkpoint_every steps); "
                          f"start it again with --out {run.root} --overwrite")


def _target_file(target: object) -> Path | None:
    """``--target val.jsonl``: a data file to ingest as the val split (then the target is ``val``)."""
    from curate.ingest.readers import EXTENSIONS

    if isinstance(target, str) and Path(target).suffix.lower() in EXTENSIONS:
        if not Path(target).exists():
            raise ConfigError(f"--target: {target} does not exist; pass a split, a source or a data file")
        return Path(target)
    return None
