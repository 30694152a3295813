"""Evaluate a fine-tuned model on the target: held-out loss and greedy generation accuracy.

Two views of "is the target model better", cheapest first. ``heldout_loss`` is a teacher-forced
response-token NLL, smooth enough to rank methods with few seeds. ``generation_accuracy`` decodes greedily and
checks extracted answers, which is what users care about but is noisy on tiny models. Standard benchmarks
through EleutherAI's lm-evaluation-harness live in ``evals.lmeval``.

Usage::

    res = heldout_loss(model, target_test, batch_size=32)            # {"loss", "ppl", "per_source", ...}
    acc = generation_accuracy(model, tok, prompts, answers, rule="gsm8k", template="auto",
                              max_new_tokens=256, batch_size=16)  # {"accuracy", "n", "rule", "examples", ...}

Generation is batched with left padding: every prompt then ends at the same column, so one ``generate`` call
decodes the whole batch, and the attention mask keeps the padding invisible. A test checks batched and
one-by-one decoding agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from evals.extract import RULES, Rule, extract_answer, is_correct
from evals.metrics import mean_by_source, perplexity
from solvers.data import TokenizedSet
from solvers.lm import prompt_ids, token_losses

N_EXAMPLES = 5


@torch.no_grad()
def heldout_loss(model: nn.Module, data: TokenizedSet, batch_size: int) -> dict[str, Any]:
    """Teacher-forced response-token NLL of ``model`` on ``data``, overall and per source.

    Both ``loss`` and ``per_source`` are token means (every response token counts once), so ``ppl`` is the
    usual per-token perplexity and a source with long answers weighs more than one with short answers. The
    per-source mean of per-example means (the estimator ScaleBiO trains on, ALGORITHMS.md §1.7) is given too,
    as ``per_source_example_mean``, because the two can rank sources differently when lengths differ. Runs in
    eval mode (no dropout) and restores the model's mode.

    Args:
        model: Causal LM returning ``.logits``.
        data: Held-out rows with response-only labels.
        batch_size: Rows per forward pass (memory only; results do not depend on it beyond float rounding).

    Returns:
        ``{"loss", "ppl", "per_source": {source: loss}, "per_source_example_mean": {source: loss},
        "n_examples", "n_tokens", "per_source_tokens": {source: n}}``. Sources without rows are absent; rows
        with no response tokens count towards ``n_examples`` only (``loss`` is NaN if no row has any).
        ``per_example`` has one value per row whose mean is ``loss`` (:func:`_per_example_loss`).
    """
    if len(data) == 0 or batch_size < 1:
        raise ValueError(f"heldout_loss: need rows and batch_size >= 1 (got {len(data)} rows, {batch_size})")
    sums, counts = _example_token_sums(model, data, batch_size)
    total_tokens = sum(counts)
    loss = sum(sums) / total_tokens if total_tokens else float("nan")
    example_means = [s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]
    src = [int(s) for s in data.source_ids]
    with_tokens = [i for i, c in enumerate(counts) if c > 0]
    return {
        "loss": loss,
        "ppl": perplexity(loss),
        "per_source": mean_by_source(example_means, src, data.sources, counts=counts),
        "per_source_example_mean": mean_by_source([example_means[i] for i in with_tokens],
                                                  [src[i] for i in with_tokens], data.sources),
        "n_examples": len(data),
        "n_tokens": total_tokens,
        "per_source_tokens": {name: sum(c for c, s in zip(counts, src, strict=True) if s == k)
                              for k, name in enumerate(data.sources) if k in src},
        "per_example": _per_example_loss(sums, total_tokens / len(data)),
    }


def _per_example_loss(sums: list[float], mean_tokens: float) -> list[float]:
    """Each row's summed NLL over the mean token count: their plain mean is the token-mean ``loss``, so paired
    statistics over rows (``evals.stats``) test exactly the number the report shows."""
    return [s / mean_tokens if mean_tokens else 0.0 for s in sums]


def _example_token_sums(model: nn.Module, data: TokenizedSet,
                        batch_size: int) -> tuple[list[float], list[int]]:
    """Summed NLL and number of response tokens of every row, in row order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    counts: list[int] = []
    try:
        for start in range(0, len(data), batch_size):
            batch = data.batch(range(start, min(start + batch_size, len(data))))
            nll, valid = token_losses(model, {k: v.to(device) for k, v in batch.items()})
            sums.extend(nll.double().sum(dim=1).tolist())
            counts.extend(int(n) for n in valid.sum(dim=1).tolist())
    finally:
        model.train(was_training)
    return sums, counts


@torch.no_grad()
def generation_accuracy(model: nn.Module, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
                        rule: Rule, template: str = "auto", max_new_tokens: int = 256,
                        batch_size: int = 16, max_prompt_len: int | None = None) -> dict[str, Any]:
    """pass@1 with greedy decoding: the share of prompts whose extracted answer equals the gold answer.

    Greedy decoding makes pass@1 a deterministic function of the model, so two methods differ only through
    their training data. The rule is stored in the result because accuracies under different rules are not
    comparable.

    Args:
        model: Causal LM with ``generate``.
        tokenizer: Its tokenizer; the prompt is formatted exactly as in training (``solvers.lm.prompt_ids``).
        prompts: Raw prompts (the ``prompt`` column, not yet templated).
        answers: Gold answers, as bare values (``"72"``) or in the rule's own format (``"... #### 72"``).
        rule: How to read an answer from generated text; see ``evals.extract``.
        template: ``"auto"`` (chat template if the tokenizer has one, else Alpaca), ``"alpaca"`` or
            ``"plain"``.
        max_new_tokens: Generation budget per prompt; an answer cut off by it counts as whatever was produced.
        batch_size: Prompts decoded together.
        max_prompt_len: Longest generation prefix; a longer prompt loses its start, as in training.

    Returns:
        ``{"accuracy", "n", "n_correct", "n_unparsed", "rule", "template", "max_new_tokens", "decoding":
        "greedy", "examples": [{"prompt", "gold", "pred", "output", "correct"}, ...]}`` with the first
        ``N_EXAMPLES`` examples; ``pred`` is None when the rule found no answer. ``per_example`` is 1.0/0.0 per
        prompt and ``outputs`` every generated text, in prompt order (for paired statistics and a judge).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"generation_accuracy: {len(prompts)} prompts but {len(answers)} answers")
    if rule not in RULES:
        raise ValueError(f"unknown answer rule {rule!r}; choose one of {', '.join(RULES)}")
    if not prompts or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("generation_accuracy: need prompts, batch_size >= 1 and max_new_tokens >= 1")
    outputs = generate_greedy(model, tokenizer, prompts, template, max_new_tokens, batch_size, max_prompt_len)
    preds = [extract_answer(text, rule) for text in outputs]
    correct = [is_correct(p, g, rule) for p, g in zip(preds, answers, strict=True)]
    examples = [{"prompt": prompts[i], "gold": answers[i], "pred": preds[i], "output": outputs[i],
                 "correct": correct[i]} for i in range(min(N_EXAMPLES, len(prompts)))]
    return {
        "accuracy": sum(correct) / len(correct),
        "n": len(correct),
        "n_correct": sum(correct),
        "n_unparsed": sum(p is None for p in preds),
        "rule": rule,
        "template": template,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "examples": examples,
        "per_example": [float(c) for c in correct],
        "outputs": outputs,
    }


@torch.no_grad()
def generate_greedy(model: nn.Module, tokenizer: Any, prompts: Sequence[str], template: str = "auto",
                    max_new_tokens: int = 256, batch_size: int = 16,
                    max_prompt_len: int | None = None) -> list[str]:
    """Greedy completions of ``prompts`` (only the new text, special tokens dropped), in input order; prompts
    longer than ``max_prompt_len`` tokens lose their start (:func:`solvers.lm.prompt_ids`)."""
    pad_id, eos_ids = _special_ids(model, tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = [prompt_ids(tokenizer, p, template, max_prompt_len) for p in prompts[start:start + batch_size]]
            input_ids, mask = _left_pad(encoded, pad_id)
            out = cast(Any, model).generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_ids)
            texts.extend(_decode_new(tokenizer, row[input_ids.shape[1]:].tolist(), eos_ids) for row in out)
    finally:
        model.train(was_training)
    return texts


def _special_ids(model: nn.Module, tokenizer: Any) -> tuple[int, list[int]]:
    """Pad id and every stop id: chat models often end turns with a token other than the tokenizer's eos."""
    eos: list[int] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   tokenizer.eos_token_id):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in eos:
                eos.append(int(i))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return int(pad), eos


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def _decode_new(tokenizer: Any, new_ids: list[int], eos_ids: list[int]) -> str:
    # Cut at the first stop token ourselves: after it, generate fills the row with padding, which may not be
    # special.
    for k, tok in enumerate(new_ids):
        if tok in eos_ids:
            new_ids = new_ids[:k]
            break
    return str(tokenizer.decode(new_ids, skip_special_tokens=True))
