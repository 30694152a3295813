"""Causal-LM helpers shared by ScaleBiO, the baselines and the evals.

Prompt formatting (chat template when the tokenizer has one, else an Alpaca-style template), response-only labels,
collation, the per-example response-token-mean loss (ALGORITHMS.md §2.2: mean over valid label tokens only, never
over padding), generic discovery of a decoder's block list for LISA, and the tiny Llama + tokenizer used by tests
and the demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{prompt}\n\n### Response:\n"
)
# Short template for tiny models trained from scratch: the Alpaca header would be most of every sequence.
PLAIN_PROMPT = "{prompt}\n### Response:\n"
TEMPLATES = {"alpaca": ALPACA_PROMPT, "plain": PLAIN_PROMPT}

# Attribute paths of the decoder block list in common HF architectures (LISA freezes/unfreezes these).
BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2, Gemma, Mistral, Phi3
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # Pythia / GPT-NeoX
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "model.language_model.layers",  # multimodal wrappers
)


TRUNCATIONS = ("keep_response", "right")


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ids, response-only labels, and what truncation did to it."""

    ids: list[int]
    labels: list[int]
    length: int
    """Tokens before truncation (template, prompt and response): what ``max_len=auto`` is chosen from."""

    @property
    def truncated(self) -> bool:
        return self.length > len(self.ids)

    @property
    def n_labels(self) -> int:
        """Label tokens that enter the loss (the first position never does: nothing predicts it)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def encode_example(tokenizer: Any, prompt: str, response: str, max_len: int, template: str = "auto",
                   truncation: str = "keep_response") -> Encoded:
    """Token ids and labels for one example, with prompt tokens masked so loss is on the response only.

    ``template="auto"`` uses the tokenizer's chat template when it has one (the model was tuned on it), else the
    Alpaca template. An example longer than ``max_len`` is cut so that what is learned from survives
    (``truncation="keep_response"``): the prompt loses its start (its end, next to the response, stays; the
    template's own tokens, chat roles included, are never cut), and only a response that does not fit beside
    the template is cut from its end, keeping the prompt's last quarter of the room. ``truncation="right"`` cuts
    the whole sequence from the right (an example whose response is cut away then has no label tokens).
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation: {truncation!r} is not one of {', '.join(TRUNCATIONS)}")
    head, resp = _head_and_response(tokenizer, prompt, response, template)
    length = len(head) + len(resp)
    if length > max_len and truncation == "keep_response":
        pre, mid, post = _head_parts(tokenizer, prompt, template)
        room = max_len - len(pre) - len(post)
        if room > 0:
            keep = min(len(mid), room - len(resp) if len(resp) <= room else room // 4)
            head = pre + (mid[len(mid) - keep:] if keep > 0 else []) + post
            resp = resp[: max_len - len(head)]
    ids = (head + resp)[:max_len]
    labels = [IGNORE] * min(len(head), len(ids)) + ids[len(head):]
    return Encoded(ids, labels, length)


def _head_and_response(tokenizer: Any, prompt: str, response: str, template: str) -> tuple[list[int], list[int]]:
    """The formatted prompt's ids and the response's ids (with the end-of-turn tokens), untruncated."""
    head = _head(tokenizer, prompt, template)
    if _uses_chat_template(tokenizer, template):
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        full = _ids(tokenizer.apply_chat_template(msgs, tokenize=True))
        if full[: len(head)] != head:  # template re-tokenised the boundary; fall back to concatenation
            full = head + tokenizer.encode(response, add_special_tokens=False)
        return head, full[len(head):]
    resp = tokenizer.encode(response, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        resp = resp + [tokenizer.eos_token_id]
    return head, resp


def _head(tokenizer: Any, prompt: str, template: str) -> list[int]:
    """The formatted prompt's ids, untruncated: what the model sees before its response."""
    if _uses_chat_template(tokenizer, template):
        msgs = [{"role": "user", "content": prompt}]
        return _ids(tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
    return list(tokenizer.encode(_format(template, prompt), add_special_tokens=False))


def _head_parts(tokenizer: Any, prompt: str, template: str) -> tuple[list[int], list[int], list[int]]:
    """The formatted prompt as (template text before the prompt, the prompt, template text after it), each
    tokenized on its own, so that truncation can shorten the prompt and leave the template whole."""
    if _uses_chat_template(tokenizer, template):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        at = text.rfind(prompt) if prompt else -1
        before, after = (text[:at], text[at + len(prompt):]) if at >= 0 else (text, "")
        mid = prompt if at >= 0 else ""
    else:
        before, _, after = TEMPLATES["alpaca" if template == "auto" else template].partition("{prompt}")
        mid = prompt

    def enc(t: str) -> list[int]:
        return list(tokenizer.encode(t, add_special_tokens=False)) if t else []

    return enc(before), enc(mid), enc(after)


def _uses_chat_template(tokenizer: Any, template: str) -> bool:
    return template == "auto" and bool(getattr(tokenizer, "chat_template", None))


def _format(template: str, prompt: str) -> str:
    return TEMPLATES["alpaca" if template == "auto" else template].format(prompt=prompt)


def template_texts(tokenizer: Any, prompts: Sequence[str], template: str) -> list[str]:
    """``prompts`` formatted as the model will see them (a tiny tokenizer is trained on these, so the template
    becomes a few tokens instead of one token a byte)."""
    if _uses_chat_template(tokenizer, template):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return [_format(template, p) for p in prompts]


def _ids(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def prompt_ids(tokenizer: Any, prompt: str, template: str = "auto", max_len: int | None = None) -> list[int]:
    """Token ids of the formatted prompt alone (the generation prefix used by evals).

    Beyond ``max_len`` tokens the prompt loses its start, as in training (:func:`encode_example`), so the model
    sees the end of the question and the template's response marker.
    """
    ids = _head(tokenizer, prompt, template)
    if max_len is None or len(ids) <= max_len:
        return ids
    pre, mid, post = _head_parts(tokenizer, prompt, template)
    keep = min(len(mid), max(0, max_len - len(pre) - len(post)))
    return pre + (mid[len(mid) - keep:] if keep else []) + post


def collate(items: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of (ids, labels) pairs into ``input_ids``, ``attention_mask`` and ``labels`` tensors.

    Built on the host on purpose (many small writes), then moved to the model's device in one copy per tensor.
    """
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long, device="cpu")
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(items), width), dtype=torch.long, device="cpu")
    for row, (ids, lab) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids, device="cpu")
        labels[row, : len(lab)] = torch.tensor(lab, device="cpu")
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def token_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token NLL (fp32, or fp64 for an fp64 model) and the validity mask, both ``[B, T-1]``."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1, :]
    if logits.dtype != torch.float64:  # upcast bf16/fp16 for the softmax; never downcast fp64 (gradient checks)
        logits = logits.float()
    target = batch["labels"][:, 1:]
    valid = target != IGNORE
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.clamp_min(0).reshape(-1), reduction="none"
    ).view_as(target)
    return nll * valid, valid


def label_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B]`` bool: which rows have at least one label token (the others carry no signal for any mean).

    Batches without ``labels`` (a caller's own loss function) count every row.
    """
    if "labels" not in batch:
        return torch.ones(batch["source_ids"].shape[0], dtype=torch.bool, device=batch["source_ids"].device)
    return (batch["labels"][:, 1:] != IGNORE).any(dim=1)


def per_example_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Response-token-mean NLL of each example, shape ``[B]``; 0 for an example with no response tokens.

    This is the research4pan estimator (ALGORITHMS.md §2.2), not the 2003pro padded mean.
    """
    nll, valid = token_losses(model, batch)
    n = valid.sum(dim=1)
    return nll.sum(dim=1) / n.clamp_min(1)


def token_mean_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL over all response tokens in the batch (the upper-level loss L1 of ALGORITHMS.md §1.4)."""
    nll, valid = token_losses(model, batch)
    return nll.sum() / valid.sum().clamp_min(1)


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of transformer blocks, found generically for any HF causal LM.

    Tries the known attribute paths first, then falls back to the largest ``nn.ModuleList`` whose children all
    share one class (what every decoder stack looks like). Raises ``ValueError`` when nothing qualifies.
    """
    for path in BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ValueError(f"cannot find the transformer block list of {type(model).__name__}")
    return best


def tiny_llama_config(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4, max_len: int = 256,
                      pad_id: int = 0, eos_id: int = 1) -> Any:
    """The ``LlamaConfig`` of :func:`tiny_llama` (the memory plan reads the shape from it without building)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_len,
        pad_token_id=pad_id, bos_token_id=eos_id, eos_token_id=eos_id, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


def tiny_llama(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4, max_len: int = 256,
               seed: int = 0, pad_id: int = 0, eos_id: int = 1) -> nn.Module:
    """A small random-init Llama for tests and the demo (no download), deterministic for a given seed."""
    from transformers import LlamaForCausalLM

    cfg = tiny_llama_config(vocab_size, hidden, layers, heads, max_len, pad_id, eos_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` in about a second, digits split one per token.

    Splitting digits (as Llama does) lets a tiny model learn arithmetic; specials are ``<pad>`` (0) and
    ``<eos>`` (1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<eos>")
