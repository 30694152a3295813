"""The one fine-tuning recipe every compare arm's data is trained with, the fine-tune itself, and its export.

Every arm starts from the same saved base model and trains with the same recipe, so the only thing that differs
between two arms is the data their method chose. The recipe is either a full fine-tune or LoRA
(``recipe.lora=true``: adapters over a frozen base, the usual way to fine-tune a real model on a small budget),
runs on ``device=`` (bf16 autocast over fp32 weights on a GPU), and lasts ``recipe.steps`` steps or
``recipe.epochs`` passes over the arm's rows.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.corpus import Rows
from curate.settings import ReweightSettings


@dataclass(frozen=True)
class Recipe:
    """The one fine-tuning recipe every method's data is trained with."""

    steps: int = 300
    """Optimizer steps of one fine-tune (one batch each); ``epochs`` overrides it when set."""
    lr: float = 3e-3
    batch_size: int = 16
    eval_rule: str = "last_number"
    eval_limit: int = 200
    max_new_tokens: int = 8
    epochs: float | None = None
    """Passes over the arm's rows instead of a fixed ``steps``: ``ceil(epochs * rows / batch_size)`` steps
    (:func:`resolved_steps`). With every arm resampled to the same budget, both give every arm the same steps."""
    lora: bool = False
    """Train LoRA adapters over a frozen base instead of every weight."""
    lora_rank: int = 8
    lora_alpha: float = 16.0
    """The adapters' update is scaled by ``lora_alpha / lora_rank``."""
    lora_targets: str = "all-linear"
    """``all-linear`` (every linear layer but the output head) or comma-separated module names (``q_proj,v_proj``)."""
    lora_dropout: float = 0.0
    weight_decay: float = 0.0
    """AdamW decoupled decay on the trained matrices."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up (then cosine decay to 0)."""
    autocast_bf16: bool = True
    """On a GPU, train under bf16 autocast (weights and optimizer state stay fp32); ignored on a CPU."""

    def __post_init__(self) -> None:
        from evals.extract import RULES

        for name in ("steps", "batch_size", "eval_limit", "max_new_tokens", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe.{name}: must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "lora_alpha"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"recipe.{name}: must be a number > 0 (got {getattr(self, name)})")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"recipe.epochs: must be > 0, or null to train recipe.steps steps (got {self.epochs})")
        if self.eval_rule not in RULES:
            raise ValueError(f"recipe.eval_rule: {self.eval_rule!r} is not one of {', '.join(RULES)}")
        for name, high in (("lora_dropout", 1.0), ("warmup_ratio", 1.0)):
            if not 0.0 <= getattr(self, name) < high:
                raise ValueError(f"recipe.{name}: must be in [0, 1) (got {getattr(self, name)})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"recipe.weight_decay: must be >= 0 (got {self.weight_decay})")
        if not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise ValueError("recipe.lora_targets: name at least one module (e.g. q_proj,v_proj) or all-linear")


def resolved_steps(recipe: Recipe, n_rows: int) -> int:
    """The optimizer steps a fine-tune on ``n_rows`` rows takes, so a caller can size a progress bar before it
    starts: ``recipe.steps``, or with ``recipe.epochs`` set ``ceil(epochs * n_rows / batch_size)`` (at least 1)."""
    if recipe.epochs is None:
        return recipe.steps
    if n_rows < 1:
        raise ValueError(f"resolved_steps: recipe.epochs needs rows to count epochs over (got {n_rows})")
    # rounded first so that e.g. 0.1 epoch of 30 rows at batch 3 is 1 step, not 2 from 1.0000000000000002
    return max(1, math.ceil(round(recipe.epochs * n_rows / recipe.batch_size, 9)))


def finetune_arm(rw: ReweightSettings, recipe: Recipe, base: Path, rows: Rows, seed: int,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> tuple[Any, Any, int]:
    """Fine-tune a fresh copy of ``base`` on an arm's resampled ``rows`` with ``recipe``, on ``rw.device``.

    The model is loaded in fp32 whatever the folder's dtype (AdamW updates on bf16 weights lose small steps), and
    with ``recipe.lora`` the adapters are initialised on the CPU from ``seed``, so an arm's start does not depend
    on the device. ``on_step`` receives finetune's per-step records (``stage="sft"``, ``step``, ``loss``, ...).

    Returns:
        The trained model, left on the device it trained on (a peft model under ``recipe.lora``: ``generate``
        and the ``evals.harness`` functions take it as is; :func:`save_for_eval` merges it), its tokenizer and the
        number of response tokens trained on (the fine-tune's cost).

    Raises:
        ConfigError: ``device=`` names no usable device, or ``recipe.lora_targets`` names no module of the model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.launch import resolve_device
    from curate.modeling import quiet_hf, tokenize
    from solvers.sft import finetune

    quiet_hf()
    device = torch.device(resolve_device(rw.device))
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
    if recipe.lora:
        model = _with_lora(model, recipe, seed)
    model = model.to(device)
    data = tokenize(rows, tok, sorted(set(rows.sources)), int(rw.max_len), rw.template, rw.truncation)
    model, history = finetune(model, data, steps=resolved_steps(recipe, len(rows)), lr=recipe.lr,
                              batch_size=recipe.batch_size, seed=seed, warmup_ratio=recipe.warmup_ratio,
                              weight_decay=recipe.weight_decay, on_step=on_step,
                              autocast_bf16=recipe.autocast_bf16 and device.type == "cuda")
    return model, tok, int(sum(history.get("n_tokens", [])))


def _with_lora(model: Any, recipe: Recipe, seed: int) -> Any:
    from curate.errors import ConfigError
    from solvers.lora import LoraSpec, with_adapters

    spec = LoraSpec(r=recipe.lora_rank, alpha=recipe.lora_alpha, dropout=recipe.lora_dropout,
                    target_modules=recipe.lora_targets, seed=seed)
    try:
        return with_adapters(model, spec, consume=True)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"recipe.lora_targets: {recipe.lora_targets!r} does not fit the model "
                          f"({str(e).splitlines()[0][:160]})") from None


def save_for_eval(model: Any, tokenizer: Any, dest: Path) -> Path:
    """Write ``model`` as a plain Hugging Face folder (config, safetensors, tokenizer) at ``dest``, atomically.

    Outside evaluators (``AutoModelForCausalLM.from_pretrained``, lm-eval's ``hf`` model) know nothing of
    adapters, so a LoRA model is merged into its base first; the merge works on a copy, leaving ``model``
    usable. Returns ``dest``.
    """
    from curate.modeling import save_pretrained

    return save_pretrained(dest, merged(model), tokenizer)


def merged(model: Any) -> Any:
    """``model`` as a plain transformers model: a peft model's adapters merged into a copy of its base, any
    other model as it is."""
    if "peft" not in sys.modules:  # nothing built adapters in this process, so model cannot carry any
        return model
    from peft import PeftModel

    return copy.deepcopy(model).merge_and_unload() if isinstance(model, PeftModel) else model
