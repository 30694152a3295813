"""Score a saved model folder with EleutherAI's lm-evaluation-harness (``curate compare --eval lm-eval:TASKS``).

lm-eval is an optional extra (``pip install 'curate[lmeval]'``, pinned to 0.4.13): it pulls in about 35
packages that nothing else needs, so it is imported only when a run asks for it.

Usage::

    tasks = parse_eval_spec("lm-eval:arc_easy,my_task")           # ['arc_easy', 'my_task']
    res = run_lm_eval("runs/x/model", tasks, include_path="my_tasks/", log_samples=True)
    res["metrics"]["arc_easy/acc"], res["samples"]["arc_easy/acc"]  # score, one value per document

lm-eval's results key metrics as ``"<metric>,<filter>"`` per task, mixed with bookkeeping (``alias``,
``sample_len``) and ``"N/A"`` stderrs; :func:`flatten_results` turns them into flat ``"<task>/<metric>"`` keys
of plain floats so compare can treat them like its own metrics, and keeps the per-document values that paired
tests between arms need.

Nothing here downloads on its own behalf: a local task (a ``.yaml`` under ``include_path``) over a local data
file runs with ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``; a hub benchmark needs its data in the HF cache then.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX = "lm-eval:"
INSTALL = "pip install 'curate[lmeval]'"
NO_FILTER = "none"


def parse_eval_spec(spec: str) -> list[str]:
    """The task names of an ``--eval`` value, so a typo fails when the command is read rather than after every
    arm has trained.

    Raises:
        ValueError: ``spec`` is not ``lm-eval:TASK[,TASK...]``.
    """
    tasks = [t.strip() for t in spec[len(PREFIX):].split(",")] if spec.startswith(PREFIX) else []
    if not tasks or not all(tasks):
        raise ValueError(f"--eval: expected {PREFIX}TASK[,TASK...] (e.g. {PREFIX}arc_easy,hellaswag), got {spec!r}")
    return list(dict.fromkeys(tasks))


def run_lm_eval(model_dir: str | Path, tasks: Sequence[str], *, include_path: str | Path | None = None,
                batch_size: int | str = 8, num_fewshot: int | None = None, limit: int | float | None = None,
                device: str = "cpu", dtype: str = "auto", log_samples: bool = False) -> dict[str, Any]:
    """Score a ``save_pretrained`` folder (model and tokenizer) on lm-eval tasks, as flat float metrics.

    Unknown task names are caught before the model loads, because lm-eval itself only fails after loading it,
    with a long traceback.

    Args:
        model_dir: Local Hugging Face folder; loaded with lm-eval's ``hf`` model.
        tasks: lm-eval task, group or tag names (built-in or under ``include_path``), or ``.yaml`` paths.
        include_path: Folder searched (recursively) for extra task ``.yaml`` files; later wins on a name clash.
        batch_size: Passed through; lm-eval also accepts ``"auto"``.
        num_fewshot: Few-shot examples per prompt (the task's default when None).
        limit: Documents per task (int) or share of them (float < 1), for quick checks; the scores then are not
            comparable with full runs.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: Model dtype (``"auto"`` keeps the saved one).
        log_samples: Also return per-document metric values (memory grows with the task size).

    Returns:
        ``{"metrics", "stderr", "higher_is_better", "config"}`` (plus ``"samples"`` with ``log_samples``); see
        :func:`flatten_results`. ``config`` records how the numbers were made, lm-eval's version included.

    Raises:
        ImportError: lm-eval is not installed; the message gives the install command.
        ValueError: no tasks, ``include_path`` is not a folder, or a task name lm-eval does not know.
    """
    lm_eval = _import_lm_eval()
    if not tasks:
        raise ValueError("run_lm_eval: no tasks given")
    model_args = {"pretrained": str(model_dir), "dtype": dtype}  # a dict: a path may hold ',' or '='
    manager = _task_manager(tasks, include_path, model_args)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=list(tasks), num_fewshot=num_fewshot, batch_size=batch_size,
        limit=limit, device=device, task_manager=manager, log_samples=log_samples)
    if out is None:  # lm-eval returns results on rank 0 only
        raise RuntimeError("run_lm_eval: lm-eval returned no results (not the main process?)")
    config = {"model_dir": str(model_dir), "tasks": list(tasks),
              "include_path": None if include_path is None else str(include_path), "num_fewshot": num_fewshot,
              "limit": limit, "batch_size": batch_size, "device": device, "dtype": dtype,
              "lm_eval_version": str(lm_eval.__version__)}
    return {**flatten_results(out), "config": config}


def flatten_results(out: Mapping[str, Any]) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` output as flat ``"<task>/<metric>"`` floats (``"<task>/<metric>/<filter>"``
    for a filter other than ``none``), because callers compare numbers across arms, not lm-eval's layout.

    Returns:
        ``{"metrics", "stderr", "higher_is_better"}``, and ``"samples"`` (per-document values in document order,
        for mean-type metrics whose per-document value is a number) when ``out`` holds samples. Bookkeeping
        entries (``alias``, ``sample_len``, a group's ``sample_count``) and ``"N/A"`` stderrs are left out.
    """
    flat: dict[str, Any] = {"metrics": {}, "stderr": {}, "higher_is_better": {}}
    directions = out.get("higher_is_better", {})
    for task, entries in out["results"].items():
        for key, value in entries.items():
            if "," not in key or not _is_number(value):
                continue
            metric, filt = key.split(",", 1)
            is_stderr = metric.endswith("_stderr")
            metric = metric.removesuffix("_stderr") if is_stderr else metric
            name = _flat_name(task, metric, filt)
            flat["stderr" if is_stderr else "metrics"][name] = float(value)
            if not is_stderr and directions.get(task, {}).get(metric) is not None:
                flat["higher_is_better"][name] = bool(directions[task][metric])
    if "samples" in out:
        flat["samples"] = _flatten_samples(out["samples"])
    return flat


def _flatten_samples(samples: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Per-document values by flat name; metrics whose documents yield tuples (perplexities, BLEU) are dropped,
    since only their corpus-level aggregate means anything."""
    values: dict[str, list[tuple[int, Any]]] = {}
    for task, docs in samples.items():
        for doc in docs:
            for metric in doc["metrics"]:
                values.setdefault(_flat_name(task, metric, doc["filter"]), []).append((doc["doc_id"], doc[metric]))
    return {name: [float(v) for _, v in sorted(pairs, key=lambda p: p[0])]
            for name, pairs in values.items() if all(_is_number(v) for _, v in pairs)}


def _flat_name(task: str, metric: str, filt: str) -> str:
    return f"{task}/{metric}" if filt == NO_FILTER else f"{task}/{metric}/{filt}"


def _is_number(value: Any) -> bool:
    # numpy scalars included (lm-eval's exact_match is np.float64); bools and strings ("N/A") are not metrics
    return not isinstance(value, (bool, str)) and hasattr(value, "__float__")


def _import_lm_eval() -> Any:
    if importlib.util.find_spec("lm_eval") is None:
        raise ImportError(f"lm-eval scoring needs EleutherAI's lm-evaluation-harness: {INSTALL}")
    return importlib.import_module("lm_eval")


def _task_manager(tasks: Sequence[str], include_path: str | Path | None, model_args: dict[str, str]) -> Any:
    """lm-eval's task index over its own tasks and ``include_path``, checked to know every task in ``tasks``."""
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"run_lm_eval: include path {include_path} is not a folder")
    manager_cls = importlib.import_module("lm_eval.tasks").TaskManager
    # metadata as simple_evaluate gives its own manager: some tasks read the model name from it
    manager = manager_cls(include_path=None if include_path is None else str(include_path), metadata=model_args)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known and not (t.endswith(".yaml") and Path(t).is_file())]
    if unknown:
        where = f"--include_path {include_path}" if include_path is not None else "--include_path DIR"
        raise ValueError(
            f"lm-eval does not know task(s) {', '.join(unknown)} (include path: {include_path or 'none'}; "
            f"local task files must end in .yaml and parse); list them with: lm-eval ls tasks {where}")
    return manager
