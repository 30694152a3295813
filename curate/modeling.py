"""Models and tokenizers for model-based methods: ``--model tiny`` or a local Hugging Face folder.

``tiny`` trains a small BPE tokenizer on the corpus and builds a small random-init Llama (seconds on a CPU, no
download). A folder is loaded with ``local_files_only=True``: nothing is ever fetched at run time. The base model
and tokenizer are saved into the run folder so `curate compare` fine-tunes exactly the same starting point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.corpus import PoolLike, Rows
from curate.errors import DataError, require
from curate.io import atomic_dir


@dataclass(frozen=True)
class TinyModel:
    """Shape of the ``--model tiny`` Llama and its tokenizer."""

    vocab_size: int = 2048
    """BPE vocabulary trained on the rows with their template. Measured with the Alpaca template on long
    GSM-style word problems (p95 length 260 tokens at 512, 161 at 2048, 153 at 4096) and on the demo's short
    rows (p95 75 at every size): 512 left long and non-English prompts close to byte level, and beyond 2048 rows
    barely shorten while each token is seen less often by a model trained from scratch."""
    hidden: int = 64
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"tiny.{name} must be > 0")
        if self.hidden % self.heads:
            raise ValueError("tiny.hidden must be a multiple of tiny.heads")


def load_tokenizer(spec: str, rows: list[PoolLike], template: str, tiny: TinyModel) -> Any:
    """The tokenizer for ``--model``: the folder's own, or for ``tiny`` a BPE trained on ``rows`` formatted with
    their template (:func:`training_texts`), so that the template encodes to a few tokens, not one a byte.

    Raises:
        DataError: the folder does not exist or holds no loadable tokenizer.
    """
    require("transformers", "train")
    quiet_hf()
    if spec == "tiny":
        from solvers.lm import train_tokenizer

        return train_tokenizer(training_texts(rows, template), tiny.vocab_size)
    from transformers import AutoTokenizer

    path = _folder(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"--model: cannot load the tokenizer of {path} ({str(e).splitlines()[0][:160]}); "
                        "it needs config.json, weights and a tokenizer") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str, tokenizer: Any, *, seed: int, max_len: int, tiny: TinyModel) -> Any:
    """The causal LM for ``--model``: a fresh ``tiny`` Llama sized to ``tokenizer`` and ``max_len``, or the
    folder's model (eager attention: per-example gradients, LESS's ``torch.func.vmap``, cannot trace SDPA's mask
    logic).

    Raises:
        DataError: the folder holds no loadable model.
    """
    require("torch", "train")
    require("transformers", "train")
    quiet_hf()
    if spec == "tiny":
        from solvers.lm import tiny_llama

        return tiny_llama(len(tokenizer), hidden=tiny.hidden, layers=tiny.layers, heads=tiny.heads,
                          max_len=max(max_len, 64), seed=seed, pad_id=tokenizer.pad_token_id,
                          eos_id=tokenizer.eos_token_id)
    from transformers import AutoModelForCausalLM

    path = _folder(spec)
    try:
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError) as e:
        raise DataError(f"--model: cannot load {path} ({str(e).splitlines()[0][:160]}); "
                        "it needs config.json, weights and a tokenizer") from None


def max_positions(spec: str) -> int | None:
    """The longest sequence the model takes (None for ``tiny``, which is built to fit)."""
    if spec == "tiny":
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_folder(spec), local_files_only=True)
    except (OSError, ValueError):
        return None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


TOKENIZER_SAMPLE = 100_000
"""Rows of each set a ``tiny`` tokenizer is trained on: all of them below this (a BPE's merges settle long before),
a seeded sample above."""
STREAMED_TOKENIZER_SAMPLE = 20_000
"""The same for a streamed pool: a sample touches the snapshot's pages only where its rows lie."""


def training_texts(rows: list[PoolLike], template: str) -> list[str]:
    """Every prompt formatted with the template a tiny tokenizer's model will see, and every response (of at most
    :data:`TOKENIZER_SAMPLE` rows of each set)."""
    from solvers.lm import template_texts

    out: list[str] = []
    for pool in rows:
        r = pool.sample(TOKENIZER_SAMPLE if isinstance(pool, Rows) else STREAMED_TOKENIZER_SAMPLE, 0)
        out += template_texts(None, r.prompts, template) + list(r.responses)
    return out


def _folder(spec: str) -> Path:
    path = Path(spec)
    if not path.is_dir():
        raise DataError(f"--model: {spec} is not a folder; pass a local Hugging Face model folder or 'tiny'")
    return path


def quiet_hf() -> None:
    """Silence transformers' per-shard progress bars (the CLI draws its own) and peft's use of a property
    transformers renamed, which warns on every adapter built and is not ours to fix."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def save_base(run_dir: Path, model: Any, tokenizer: Any) -> Path:
    """Save the untrained base model and its tokenizer into the run folder (a resumed run and compare start from
    it); returns the folder."""
    from curate.runs import RunFolder

    return save_pretrained(RunFolder(run_dir).base_model, model, tokenizer)


def save_pretrained(dest: Path, model: Any, tokenizer: Any) -> Path:
    """Save a model and its tokenizer as the folder ``dest``, atomically and with umask modes (safetensors alone
    would leave the weights 0600)."""
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return dest


def tokenize(rows: PoolLike, tokenizer: Any, sources: list[str], max_len: int, template: str,
             truncation: str = "keep_response") -> Any:
    """A :class:`solvers.data.TokenizedSet` of ``rows``, source ids in ``sources`` order (rows of another
    source, such as target rows, count as the first); for a streamed pool a :class:`solvers.stream.StreamedSet`
    that encodes rows as batches ask for them."""
    from solvers.data import tokenize_rows

    if not isinstance(rows, Rows):
        from curate.snapshot import PoolSnapshot
        from solvers.stream import StreamedSet

        assert isinstance(rows, PoolSnapshot)

        return StreamedSet(rows.texts, rows.source_codes(sources), sources, tokenizer, max_len, template,
                           truncation, fetch_ids=rows.ids)

    index = {s: i for i, s in enumerate(sources)}
    return tokenize_rows(tokenizer, rows.prompts, rows.responses, [index.get(s, 0) for s in rows.sources], sources,
                         max_len, template, rows.example_ids, truncation)
