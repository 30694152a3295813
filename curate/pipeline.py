"""`curate reweight` as a sequence of stages: plan -> read data -> (model) -> method -> artefacts -> resample.

The store is opened read-only while data is read and for a moment at the end to record the run, never while a
model trains, so other commands can use the database meanwhile. Every method, ScaleBiO or baseline, ends in the
same run folder (DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import build, to_dict
from curate.corpus import Rows, load_pool_and_target
from curate.db import data_fingerprint, open_db
from curate.errors import ConfigError
from curate.io import write_json
from curate.modeling import TinyModel, load_model, load_tokenizer, max_positions, save_base
from curate.runs import update_manifest, write_config
from curate.tokens import TokenReport, resolve_max_len, tokenize_run
from curate.weights import build_weights_doc, normalise, write_weights

METHODS = ("scalebio", "uniform", "proportional", "temperature", "less", "rho", "doremi")
SIMPLE = ("uniform", "proportional", "temperature")
STEP_FIELD = {"scalebio": "steps", "doremi": "proxy_steps", "rho": "reference_steps"}


@dataclass(frozen=True)
class ReweightSettings:
    """Everything `curate reweight` needs; method-specific keys live in ``method_args``."""

    method: str = "scalebio"
    target: str = "val"
    model: str = "tiny"
    steps: int | None = None
    budget: int | None = None
    seed: int = 0
    max_len: int | str = "auto"
    """Tokens per example: ``auto`` (the default) picks the length at which 99% of pool and target rows are not
    truncated (capped by the model's max positions and 1024, see ``curate.tokens``); ``N`` sets it."""
    template: str = "auto"
    truncation: str = "keep_response"
    """How a too-long example is cut: ``keep_response`` drops the prompt's start (template tokens stay) and cuts a
    response only when it alone does not fit; ``right`` cuts from the end (responses can be lost entirely)."""
    tiny: dict = field(default_factory=dict)
    method_args: dict = field(default_factory=dict)
    per_method: dict = field(default_factory=dict)
    save_model: bool = False
    """ScaleBiO: also save the final w model (fits the target, near-optimal on the weighted pool) to RUN/model."""
    device: str = "auto"
    """Where ScaleBiO trains: ``auto`` (the first GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``. On a GPU the model passes run under bf16 autocast unless ``autocast_bf16=false`` is set; λ, p and
    the weighted sums stay fp32. The other methods train on the CPU."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method: {self.method!r} is not one of {', '.join(METHODS)}")
        if isinstance(self.max_len, str) and self.max_len != "auto":
            raise ValueError(f"max_len: {self.max_len!r} is neither auto nor a number of tokens")
        if isinstance(self.max_len, int) and self.max_len < 8:
            raise ValueError("max_len must be >= 8 (or auto)")
        if self.truncation not in ("keep_response", "right"):
            raise ValueError(f"truncation: {self.truncation!r} is not one of keep_response, right")
        if self.template not in ("auto", "alpaca", "plain"):
            raise ValueError(f"template: {self.template!r} is not one of auto, alpaca, plain")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; an explicit GPU must exist."""
    if device == "cpu":
        return device
    try:
        import torch
    except ImportError:
        if device == "auto":
            return "cpu"
        raise ConfigError(f"device={device}: torch is not installed; pip install 'curate[train]'") from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device}: torch sees no GPU here; use device=cpu (or install a CUDA build of torch)")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={device}: only {torch.cuda.device_count()} GPU(s) visible; use cuda:0")
    return device


def method_config(settings: ReweightSettings) -> Any:
    """The chosen method's own config dataclass, with --steps and --seed folded in."""
    cls = config_class(settings.method)
    values = {**settings.per_method.get(settings.method, {}), **settings.method_args}
    names = {f.name for f in dataclasses.fields(cls)}
    if settings.steps is not None:
        key = STEP_FIELD.get(settings.method)
        if key is None:
            raise ConfigError(f"--steps: {settings.method} has no step count; set its own keys instead")
        values[key] = settings.steps
    if "seed" in names:
        values.setdefault("seed", settings.seed)
    # bf16 model passes on a GPU unless the user says otherwise; DeepSpeed ranks take bf16 from the DeepSpeed
    # config instead (its engine owns the precision).
    if settings.method == "scalebio" and "LOCAL_RANK" not in os.environ and resolve_device(settings.device) != "cpu":
        values.setdefault("autocast_bf16", True)
    return build(cls, values, where=settings.method)


def config_class(method: str) -> type:
    if method == "scalebio":
        from solvers.scalebio import ScaleBiOConfig

        return ScaleBiOConfig
    from baselines import BASELINES

    return BASELINES[method].config


def settings_from(values: dict[str, Any]) -> ReweightSettings:
    """Split a merged config dict into top-level settings and the method's own keys (flat or ``method.key``)."""
    top = {f.name for f in dataclasses.fields(ReweightSettings)}
    method = values.get("method", "scalebio")
    flat = {k: v for k, v in values.items() if k in top and k not in ("method_args", "per_method")}
    flat["per_method"] = {m: values[m] for m in METHODS if isinstance(values.get(m), dict)}
    flat["method_args"] = {k: v for k, v in values.items() if k not in top and k not in METHODS}
    if method not in METHODS:
        raise ConfigError(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    return build(ReweightSettings, flat, where="reweight")


def settings_to_values(settings: ReweightSettings) -> dict[str, Any]:
    """The inverse of :func:`settings_from`: the config dict a resumed run starts from."""
    values = {k: v for k, v in to_dict(settings).items() if k not in ("method_args", "per_method")}
    values.update(settings.per_method)
    values.update(settings.method_args)
    return values


@dataclass
class ReweightOutcome:
    """What a reweight run produced."""

    run_dir: Path
    method: str
    weights: dict[str, float]
    doc: dict[str, Any]
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[dict[str, Any]], None]


def reweight(db: Path, settings: ReweightSettings, run_dir: Path, *, on_step: StepFn | None = None,
             resume: bool = False, zero_stage: int | None = None,
             ds_config: dict[str, Any] | None = None) -> ReweightOutcome:
    """Learn weights (or scores) with ``settings.method`` and write the run folder; resample when a budget is set.

    ``zero_stage``: run ScaleBiO on the DeepSpeed engine (every rank of a torchrun job calls this); only rank 0
    writes the run folder and the database, the other ranks return after training with an empty ``doc``.
    ``ds_config``: the user's DeepSpeed config (:func:`read_deepspeed_config`), the base of the engines' configs.
    """
    start = time.perf_counter()
    writer = zero_stage is None or os.environ.get("RANK", "0") == "0"
    cfg = method_config(settings)
    with open_db(db, read_only=True) as con:
        pool, target = load_pool_and_target(con, settings.target)
        sources = sorted(set(pool.sources))
        fingerprint = data_fingerprint(con, sources)
    counts = {s: pool.sources.count(s) for s in sources}
    resolved = {**settings_to_values(settings), "method_config": to_dict(cfg)}
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and writer:  # a resumed run keeps the config it started with (fit refuses a different one)
        write_config(run_dir, resolved)
    distributed = None if zero_stage is None else (zero_stage, ds_config)
    result = _run_method(settings, cfg, counts, pool, target, run_dir, on_step, resume, distributed, writer)
    if not writer:
        return ReweightOutcome(run_dir, settings.method, result["weights"], {}, time.perf_counter() - start)
    config_hash = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
    doc = build_weights_doc(settings.method, normalise(result["weights"]), counts=counts, target=settings.target,
                            config_hash=config_hash, data_fingerprint=fingerprint,
                            averaged=result.get("averaged"), extra={"diagnostics": result.get("diagnostics", {})})
    write_weights(run_dir / "weights.json", doc)
    _write_extras(run_dir, result)
    seconds = time.perf_counter() - start
    update_manifest(run_dir, kind="reweight", method=settings.method, seed=settings.seed, data_fingerprint=fingerprint,
                    rows={"pool": len(pool), "target": len(target)}, counts=counts, seconds=round(seconds, 3))
    _record(db, run_dir, settings, resolved, doc, result)
    outcome = ReweightOutcome(run_dir, settings.method, doc["sources"], doc, seconds, result.get("diagnostics", {}))
    if settings.budget is not None:
        from curate.resample import resample

        with open_db(db, read_only=True) as con:
            resample(con, run_dir, budget=settings.budget, seed=settings.seed)
    return outcome


def _run_method(settings: ReweightSettings, cfg: Any, counts: dict[str, int], pool: Rows, target: Rows,
                run_dir: Path, on_step: StepFn | None, resume: bool,
                distributed: tuple[int, dict[str, Any] | None] | None = None, writer: bool = True) -> dict[str, Any]:
    if settings.method in SIMPLE:
        from baselines import BASELINES

        method = BASELINES[settings.method]
        res = method.fn(cfg, counts=counts)
        return {"weights": res.weights}
    spec = str(run_dir / "base_model") if resume and (run_dir / "base_model").is_dir() else settings.model
    model, tok, train, tgt, report = load_and_tokenize(settings, spec, pool, target, sorted(counts))
    if not resume and writer:
        save_base(run_dir, model, tok)
    if settings.method == "scalebio" and distributed is not None:
        out = _run_scalebio_distributed(model, train, tgt, cfg, on_step, *distributed)
    elif settings.method == "scalebio":
        model = model.to(resolve_device(settings.device))
        out = _run_scalebio(model, train, tgt, cfg, run_dir, on_step, resume)
        final = out.pop("model")
        if settings.save_model and hasattr(final, "save_pretrained"):
            save_base(run_dir, final, tok, name="model")
    else:
        out = _run_baseline(settings.method, cfg, train, tgt, model, on_step)
    return _with_tokenization(out, report)


def load_and_tokenize(settings: ReweightSettings, spec: str, pool: Rows, target: Rows,
                      sources: list[str]) -> tuple[Any, Any, Any, Any, TokenReport]:
    """The tokenizer, ``max_len`` (resolved when ``auto``), the tokenized pool and target, then the model sized
    for that length. Refuses (exit 2) a source or target with no usable row before any model is built."""
    tiny = build(TinyModel, settings.tiny, where="tiny")
    tok = load_tokenizer(spec, [pool, target], settings.template, tiny)
    max_len, chosen = resolve_max_len(settings.max_len, tok, pool, target, settings.template, max_positions(spec))
    train, tgt, report = tokenize_run(pool, target, tok, sources, max_len, settings.template, settings.truncation,
                                      chosen)
    model = load_model(spec, tok, seed=settings.seed, max_len=max_len, tiny=tiny)
    return model, tok, train, tgt, report


def _with_tokenization(out: dict[str, Any], report: TokenReport) -> dict[str, Any]:
    diagnostics = dict(out.get("diagnostics") or {})
    diagnostics["tokenization"] = report.to_dict()
    diagnostics["warnings"] = list(diagnostics.get("warnings") or []) + report.warnings
    return {**out, "diagnostics": diagnostics}


def _run_baseline(method: str, cfg: Any, train: Any, tgt: Any, model: Any, on_step: StepFn | None) -> dict[str, Any]:
    from baselines import run as run_baseline

    usable = {s: int(n) for s, n in zip(train.sources, train.counts(), strict=True)}  # label-less rows dropped
    try:
        res = run_baseline(method, cfg, counts=usable, model=model, train=train, target=tgt, on_step=on_step)
    except ValueError as e:
        raise ConfigError(f"{method}: {e}") from None
    return {"weights": res.weights, "scores": res.scores, "trajectory": res.trajectory, "diagnostics": res.info}


def _run_scalebio(model: Any, train: Any, tgt: Any, cfg: Any, run_dir: Path, on_step: StepFn | None,
                  resume: bool) -> dict[str, Any]:
    from solvers.scalebio import NonFiniteLossError, fit, make_samplers

    tr, va = make_samplers(train, tgt, cfg)
    try:
        # The base is saved in the run folder already, so u may train it in place: one model copy fewer.
        res = fit(model, tr, va, cfg, on_step=on_step, checkpoint_dir=run_dir / "checkpoints", resume=resume,
                  consume=True)
    except NonFiniteLossError as e:
        raise ConfigError(f"{e}; the last good checkpoint is in {run_dir / 'checkpoints'} "
                          "(lower lr_model or lr_lambda and use --resume)") from None
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"scalebio: {e}") from None
    return {"weights": res.weights, "averaged": res.averaged_weights, "trajectory": res.trajectory,
            "diagnostics": dataclasses.asdict(res.diagnostics), "model": res.model}


def _run_scalebio_distributed(model: Any, train: Any, tgt: Any, cfg: Any, on_step: StepFn | None,
                              zero_stage: int, ds_config: dict[str, Any] | None) -> dict[str, Any]:
    from solvers.distributed import fit_distributed, shutdown
    from solvers.scalebio import NonFiniteLossError, make_samplers

    tr, va = make_samplers(train, tgt, cfg)
    try:
        res = fit_distributed(model, tr, va, cfg, zero_stage=zero_stage, ds_config=ds_config, on_step=on_step)
    except NonFiniteLossError as e:
        raise ConfigError(f"{e}; lower lr_model or lr_lambda") from None
    except ValueError as e:
        raise ConfigError(f"scalebio: {e}") from None
    finally:
        shutdown()
    return {"weights": res.weights, "averaged": res.averaged_weights, "trajectory": res.trajectory,
            "diagnostics": dataclasses.asdict(res.diagnostics)}


def read_deepspeed_config(path: Path) -> dict[str, Any]:
    """``--deepspeed-config``: a DeepSpeed config file (``.json`` as JSON, anything else as YAML), read here
    without importing deepspeed so that a bad file is reported before any rank starts."""
    import yaml

    where = f"--deepspeed-config: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({e.strerror or e}); pass a DeepSpeed JSON or YAML file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"{where} is not valid {kind} ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of DeepSpeed keys (e.g. zero_optimization)")
    return data


def check_deepspeed_config(user: dict[str, Any] | None, path: Path | None, cfg: Any, nproc: int,
                           zero: int | None) -> int:
    """The ZeRO stage to run (``--zero``, else the file's ``zero_optimization.stage``, else 2), after building
    an engine config once, so that a key curate owns is refused in the parent, naming the file and key."""
    from solvers.distributed import engine_config, zero_stage_of

    where = f"--deepspeed-config: {path}: " if path is not None else "--zero: "
    try:
        stage = zero_stage_of(user, zero)
        if stage not in (2, 3):
            raise ValueError(f"ZeRO stage {stage} is not 2 or 3 (zero_optimization.stage or --zero)")
        engine_config(user, micro_batch=math.ceil(cfg.batch_size / nproc), world=nproc, grad_clip=cfg.grad_clip,
                      zero_stage=stage)
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    return stage


def _write_extras(run_dir: Path, result: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.io import atomic_path

    if result.get("trajectory"):
        table = pa.Table.from_pylist([_flat(r) for r in result["trajectory"]])
        with atomic_path(run_dir / "trajectory.parquet") as tmp:
            pq.write_table(table, tmp)
    if result.get("scores"):
        ids, srcs, vals = zip(*result["scores"], strict=True)
        table = pa.table({"example_id": [str(i) for i in ids], "source": list(srcs),
                          "score": [float(v) for v in vals]})
        with atomic_path(run_dir / "scores.parquet") as tmp:
            pq.write_table(table, tmp)
    if result.get("diagnostics"):
        write_json(run_dir / "diagnostics.json", result["diagnostics"])


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{k}_{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _record(db: Path, run_dir: Path, settings: ReweightSettings, resolved: dict, doc: dict,
            result: dict[str, Any]) -> None:
    run_id = run_dir.name
    with open_db(db) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM weights WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM scores WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO runs VALUES (?, ?, ?, 'finished', ?, now(), ?)",
                    [run_id, settings.method, json.dumps(resolved, default=str), doc["created_at"], str(run_dir)])
        rows = [(run_id, int(r["step"]), s, float(r[f"p_{s}"])) for r in result.get("trajectory") or []
                for s in doc["sources"] if f"p_{s}" in r]
        last = max((r[1] for r in rows), default=-1) + 1
        rows += [(run_id, last, s, w) for s, w in doc["sources"].items()]
        con.executemany("INSERT INTO weights VALUES (?, ?, ?, ?)", rows)
        if result.get("scores"):
            con.executemany("INSERT INTO scores VALUES (?, ?, ?)",
                            [(run_id, str(i), float(v)) for i, _, v in result["scores"]])
        con.execute("COMMIT")


def memory_plan(settings: ReweightSettings, cfg: Any, max_memory_gb: float | None) -> tuple[list[str], str | None]:
    """``--plan``: estimated peak memory of full, LISA and LoRA ScaleBiO (and plain fine-tuning) for the chosen
    model and batch, and an error line when the chosen variant does not fit the memory available.

    The model shape comes from its config alone (``--model tiny``: the ``tiny.*`` settings), so nothing is loaded.
    """
    from solvers.memory import available_memory, estimate, fitting_alternative, human, plan_lines

    if settings.method != "scalebio":
        raise ConfigError(f"--plan: memory plans are for --method scalebio, not {settings.method}")
    shape = _model_shape(settings)
    chosen = "lora" if cfg.lower_level == "lora" else "lisa" if cfg.lisa else "full"
    max_len = _planned_max_len(settings)
    kw = {"val_batch": cfg.val_batch_size, "lisa_layers": cfg.lisa_layers, "lora_r": cfg.lora_r,
          "checkpointing": cfg.gradient_checkpointing}
    lines = plan_lines(shape, cfg.batch_size, max_len, chosen=chosen, **kw)
    if settings.max_len == "auto":
        lines.append(f"max_len auto: planned at its ceiling, {max_len} tokens (pass max_len=N to plan a length)")
    device = resolve_device(settings.device)
    budget = int(max_memory_gb * 2**30) if max_memory_gb is not None else available_memory(device)
    source = "--max-memory" if max_memory_gb is not None else (
        "available RAM" if device == "cpu" else f"free memory on {device}")
    lines.append(f"memory budget: {human(budget)} ({source})")
    need = estimate(shape, chosen, cfg.batch_size, max_len, **kw).total
    if need <= budget:
        return lines, None
    alt = fitting_alternative(shape, chosen, cfg.batch_size, max_len, budget, gpu=device != "cpu", **kw)
    hint = f"set {alt}" if alt else "no single change fits; use a smaller model or more memory"
    return lines, (f"--plan: this run needs about {human(need)} but {source} is {human(budget)}; {hint}")


def _planned_max_len(settings: ReweightSettings) -> int:
    """``max_len``, or for ``auto`` the longest it can resolve to (the data is not read for a plan)."""
    from curate.tokens import AUTO_CEILING

    if isinstance(settings.max_len, int):
        return settings.max_len
    cap = max_positions(settings.model)
    return min(AUTO_CEILING, cap) if cap else AUTO_CEILING


def _model_shape(settings: ReweightSettings) -> Any:
    from solvers.memory import ModelShape

    if settings.model == "tiny":
        tiny = build(TinyModel, settings.tiny, where="tiny")
        return ModelShape(vocab=tiny.vocab_size, hidden=tiny.hidden, layers=tiny.layers,
                          intermediate=4 * tiny.hidden, heads=tiny.heads, kv_heads=tiny.heads)
    path = Path(settings.model)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--plan: cannot read the config of {path} ({str(e).splitlines()[0][:160]})") from None
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return ModelShape.from_config(config, dtype_bytes=2 if "16" in dtype else 4)
