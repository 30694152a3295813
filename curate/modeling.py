"""Models and tokenizers for model-based methods: ``--model tiny`` or a local Hugging Face folder.

``tiny`` trains a small BPE tokenizer on the corpus and builds a small random-init Llama (seconds on a CPU, no
download). A folder is loaded with ``local_files_only=True``: nothing is ever fetched at run time. The base model
and tokenizer are saved into the run folder so `curate compare` fine-tunes exactly the same starting point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.corpus import Rows
from curate.errors import DataError, require


@dataclass(frozen=True)
class TinyModel:
    """Shape of the ``--model tiny`` Llama and its tokenizer."""

    vocab_size: int = 512
    hidden: int = 64
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"tiny.{name} must be > 0")
        if self.hidden % self.heads:
            raise ValueError("tiny.hidden must be a multiple of tiny.heads")


def load_model(spec: str, texts: list[str], *, seed: int, max_len: int, tiny: TinyModel) -> tuple[Any, Any]:
    """(model, tokenizer) for ``--model``: ``tiny`` or a local HF causal-LM folder.

    Raises:
        DataError: the folder does not exist or holds no loadable model/tokenizer.
    """
    require("torch", "train")
    require("transformers", "train")
    quiet_hf()
    from solvers.lm import tiny_llama, train_tokenizer

    if spec == "tiny":
        tok = train_tokenizer(texts, tiny.vocab_size)
        model = tiny_llama(len(tok), hidden=tiny.hidden, layers=tiny.layers, heads=tiny.heads,
                           max_len=max(max_len, 64), seed=seed, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
        return model, tok
    path = Path(spec)
    if not path.is_dir():
        raise DataError(f"--model: {spec} is not a folder; pass a local Hugging Face model folder or 'tiny'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Eager attention: per-example gradients (LESS, torch.func.vmap) cannot trace SDPA's mask logic.
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError) as e:
        raise DataError(f"--model: cannot load {path} ({str(e).splitlines()[0][:160]}); "
                        "it needs config.json, weights and a tokenizer") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def quiet_hf() -> None:
    """Silence transformers' per-shard progress bars (the CLI draws its own) and peft's use of a property
    transformers renamed, which warns on every adapter built and is not ours to fix."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def save_base(run_dir: Path, model: Any, tokenizer: Any, name: str = "base_model") -> Path:
    """Save a model and its tokenizer as ``run_dir/name`` (the untrained base by default; compare starts from it)."""
    dest = run_dir / name
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def tokenize(rows: Rows, tokenizer: Any, sources: list[str], max_len: int, template: str) -> Any:
    """A :class:`solvers.data.TokenizedSet` of ``rows``, source ids in ``sources`` order."""
    from solvers.data import tokenize_rows

    index = {s: i for i, s in enumerate(sources)}
    return tokenize_rows(tokenizer, rows.prompts, rows.responses, [index.get(s, 0) for s in rows.sources], sources,
                         max_len, template, rows.example_ids)
