"""Tokenizing a run's pool and target: ``max_len=auto``, truncation, and the report the user is shown.

Every model-based method and `curate compare` go through :func:`tokenize_run`, so the same rows are kept, cut and
counted the same way everywhere. Rows whose response is truncated away are dropped (they carry no signal) and
counted; a source or target left with no usable row stops the run with a one-line error that names it and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from curate.corpus import PoolLike, Rows
from curate.errors import DataError

AUTO_SHARE = 0.99
"""``max_len=auto`` keeps every token, so in particular every label token, of at least this share of rows."""
AUTO_CEILING = 1024
"""``max_len=auto`` never exceeds this: activation memory grows with length (pass ``max_len=N`` to go higher)."""
AUTO_SAMPLE = 20_000
"""Rows of the pool (and of the target) tokenized to pick ``max_len=auto``: a p99 from 20,000 rows is within a
few tokens of the pool's, at a fraction of the cost on a pool of millions."""
AUTO_MULTIPLE = 8
WARN_SHARE = 0.01
"""Warn when more than this share of a source's rows lose every label token."""


@dataclass
class TokenReport:
    """What tokenization did: the length used, how it was chosen, and per-source and target statistics."""

    max_len: int
    chosen: str
    truncation: str
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    streamed: bool = False
    """The pool was streamed: its per-source truncation counts are estimates from a sample of each source (rows
    exact), and label-less rows are stepped over as they are met rather than dropped up front."""

    def to_dict(self) -> dict[str, Any]:
        out = {"max_len": self.max_len, "chosen": self.chosen, "truncation": self.truncation,
               "sources": self.sources, "target": self.target, "warnings": list(self.warnings)}
        if self.streamed:
            out["streamed"] = True
        return out


def resolve_max_len(setting: int | str, tokenizer: Any, pool: PoolLike, target: Rows, template: str,
                    model_cap: int | None) -> tuple[int, str]:
    """The sequence length to use and a phrase saying how it was chosen.

    An explicit ``max_len=N`` wins. ``auto`` is the 99th percentile of the untruncated token length (template,
    prompt and response) over the pool and, separately, over the target, whichever is larger, rounded up to a
    multiple of 8 and capped by the model's maximum positions and :data:`AUTO_CEILING`. At that length at least
    99% of rows are not truncated at all, so they keep all their label tokens whatever the truncation mode.
    """
    if isinstance(setting, int):
        return setting, "set"
    need = max(_length_quantile(tokenizer, pool, template), _length_quantile(tokenizer, target, template))
    length = -(-need // AUTO_MULTIPLE) * AUTO_MULTIPLE
    caps = [(AUTO_CEILING, "the auto ceiling")] + ([(model_cap, "the model's max positions")] if model_cap else [])
    cap, why = min(caps)
    if length > cap:
        return cap, f"auto: capped at {cap} by {why}, p99 length {need}"
    return max(length, AUTO_MULTIPLE), f"auto: p99 length {need}"


def _length_quantile(tokenizer: Any, rows: PoolLike, template: str) -> int:
    from solvers.lm import encode_example

    picked = rows.sample(AUTO_SAMPLE, 0)
    lengths = sorted(encode_example(tokenizer, p, r, 1 << 30, template).length
                     for p, r in zip(picked.prompts, picked.responses, strict=True))
    if not lengths:
        return AUTO_MULTIPLE
    return lengths[math.ceil(AUTO_SHARE * len(lengths)) - 1]  # the shortest length that fits 99% of rows whole


def tokenize_run(pool: PoolLike, target: Rows, tokenizer: Any, sources: list[str], max_len: int, template: str,
                 truncation: str, chosen: str = "set") -> tuple[Any, Any, TokenReport]:
    """The pool and target as :class:`solvers.data.TokenizedSet` (label-less rows dropped) and the report; a
    streamed pool (:class:`curate.snapshot.PoolSnapshot`) as a :class:`solvers.stream.StreamedSet`, its statistics
    estimated from a sample of every source (the report says so).

    Raises:
        DataError: a source or the target has no row left with a label token; names it, the share and the fix.
    """
    from curate.modeling import tokenize

    train = tokenize(pool, tokenizer, sources, max_len, template, truncation)
    tgt = tokenize(target, tokenizer, sources, max_len, template, truncation)
    report = TokenReport(max_len, chosen, truncation,
                         {s: train.stats[s].to_dict() for s in sources if train.stats[s].rows},
                         tgt.stats["all"].to_dict(), streamed=not isinstance(pool, Rows))
    check_report(report)
    return train, tgt, report


def check_report(report: TokenReport) -> None:
    """Refuse a source or target with no usable row; warn (into ``report.warnings``) above 1% label-less rows."""
    fix = (f"raise max_len= (now {report.max_len}) or use truncation=keep_response"
           if report.truncation == "right" else f"raise max_len= (now {report.max_len})")
    named = [*report.sources.items(), ("the target", report.target)]
    for name, st in named:
        label = name if name == "the target" else f"source {name!r}"
        if st["rows"] and st["usable"] == 0:
            raise DataError(f"{label}: all {st['rows']} rows lose every response token at max_len "
                            f"{report.max_len} (truncation={report.truncation}); {fix}")
        share = st["no_labels"] / st["rows"] if st["rows"] else 0.0
        if share > WARN_SHARE:
            about = "about " if report.streamed and name != "the target" else ""
            report.warnings.append(f"{label}: {about}{share:.1%} of rows ({st['no_labels']}/{st['rows']}) lost every "
                                   f"response token and were left out; {fix}")
