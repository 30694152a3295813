"""The embedded default: a multi-source corpus from `reasoning-gym`, then ingest -> every method -> compare.

Sources (train split), each a real procedural task with exact answers:
- ``arith`` 2-term arithmetic, the target task (clean);
- ``arith_corrupt`` the same task with every answer replaced by a wrong number (planted bad source);
- ``chain_sum`` longer sums (related task);
- ``leg_counting`` and ``gsm_symbolic`` word problems (off-target for a tiny model).
The target is fresh 2-term arithmetic (``val`` for the methods, ``test`` for evaluation). The ``oracle`` arm trains
on ``arith`` alone, the ceiling a perfect weighting could reach.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from curate.errors import require

ARITH = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-")}
SOURCES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "arith": ("basic_arithmetic", ARITH, False),
    "arith_corrupt": ("basic_arithmetic", ARITH, True),
    "chain_sum": ("chain_sum", {}, False),
    "leg_counting": ("leg_counting", {}, False),
    "gsm_symbolic": ("gsm_symbolic", {}, False),
}


def _rows(task: str, params: dict[str, Any], n: int, seed: int, corrupt: bool) -> list[dict[str, str]]:
    import reasoning_gym

    rng = random.Random(seed)
    out = []
    for ex in reasoning_gym.create_dataset(task, size=n, seed=seed, **params):
        answer = str(ex["answer"])
        if corrupt:
            answer = str(int(answer) + rng.choice([-1, 1]) * rng.randint(1, 9)) if answer.lstrip("-").isdigit() else "0"
        out.append({"instruction": ex["question"], "input": "", "output": answer})
    return out


def build_corpus(dest: Path, per_source: int = 400, n_val: int = 100, n_test: int = 200) -> dict[str, Path]:
    """Write the demo's JSONL files into ``dest``; returns {name: path}. Deterministic."""
    require("reasoning_gym", "train")
    dest.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for i, (name, (task, params, corrupt)) in enumerate(SOURCES.items()):
        files[name] = _write(dest / f"{name}.jsonl", _rows(task, params, per_source, 1000 + i, corrupt))
    files["target_val"] = _write(dest / "target_val.jsonl", _rows("basic_arithmetic", ARITH, n_val, 7, False))
    files["target_test"] = _write(dest / "target_test.jsonl", _rows("basic_arithmetic", ARITH, n_test, 8, False))
    return files


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


DEMO_BUDGET = 600
DEMO_CONFIG: dict[str, Any] = {
    "template": "plain",
    "max_len": 96,
    "tiny": {"vocab_size": 384, "hidden": 64, "layers": 2, "heads": 4},
    "scalebio": {"steps": 200, "batch_size": 40, "val_batch_size": 32, "alpha": 10.0},
    # Tiny models trained from scratch need far larger learning rates than the papers' 7B-scale defaults.
    "less": {"lr": 1e-2, "warmup_epochs": 2, "proj_dim": 1024, "select_fraction": 0.2, "grad_batch_size": 32},
    "rho": {"reference_steps": 100, "reference_lr": 3e-3, "select_fraction": 0.2},
    "doremi": {"reference_data": "target", "reference_steps": 100, "reference_lr": 3e-3, "proxy_steps": 100,
               "proxy_lr": 1e-3},
    "recipe": {"steps": 250, "lr": 3e-3, "batch_size": 16, "eval_limit": 150, "max_new_tokens": 6},
}
