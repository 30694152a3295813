"""Pieces every benchmark script shares: the size flags, the synthetic batch, the fine-tuning reference, the
ScaleBiO runner, the model, memory probes.

Benchmarks are scripts (`python benchmarks/bench_x.py`), so this module is imported by its bare name.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from solvers.lm import per_example_loss, tiny_llama
from solvers.scalebio.lisa import Lisa
from solvers.scalebio.step import init_state, scalebio_step


def add_size_args(ap: argparse.ArgumentParser) -> None:
    """The flags that size the synthetic model and batch (the same defaults in every benchmark, so their numbers
    compare), and the LISA width."""
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--lisa-layers", type=int, default=2)


def make_batch(args: argparse.Namespace, seed: int) -> dict[str, torch.Tensor]:
    """Random tokens; the first quarter of each row is a masked prompt, the rest is the response."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, args.vocab, (args.batch, args.seq), generator=g)
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "source_ids": torch.arange(args.batch) % args.sources}


class FineTune:
    """Plain full-parameter fine-tuning: the same loss (response-token mean per example), clipping and AdamW as
    ScaleBiO's u, the reference every ratio is taken against."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)

    def step(self, batch: dict[str, torch.Tensor], _val: dict[str, torch.Tensor]) -> None:
        self.model.zero_grad(set_to_none=True)
        per_example_loss(self.model, batch).mean().backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()


class ScaleBiO:
    """One ScaleBiO step (u, w and λ updates) at fixed hyper-parameters, optionally with LISA on u and w.

    ``lora``/``consume`` are passed to :func:`solvers.scalebio.step.init_state`; ``release_state`` to
    :class:`~solvers.scalebio.lisa.Lisa` (whether frozen blocks give their AdamW moments back).
    """

    def __init__(self, model: torch.nn.Module, n_sources: int, *, lisa_layers: int | None = None,
                 lisa_period: int = 20, release_state: bool = True, lora: Any = None, consume: bool = False) -> None:
        self.state = init_state(model, n_sources, 1e-4, 1e-2, 5e-4, 0.01, lora=lora, consume=consume)
        self.n_sources, self.t = n_sources, 0
        self.lisa = (Lisa([self.state.u, self.state.w], lisa_layers, lisa_period, 0, release_state=release_state)
                     if lisa_layers else None)

    def step(self, batch: dict[str, torch.Tensor], val: dict[str, torch.Tensor]) -> None:
        if self.lisa is not None:
            self.lisa.maybe_redraw(self.t, [self.state.opt_u, self.state.opt_w])
        scalebio_step(self.state, batch, val, alpha=10.0, lr_model=1e-4, lr_lambda=1e-2, n_sources=self.n_sources)
        self.t += 1


def new_model(args: argparse.Namespace) -> torch.nn.Module:
    """The benchmark's model: a local Hugging Face folder when ``args.model`` is set (fp32, eager attention, as
    ScaleBiO runs it on CPU), else a Llama-style model from the script's size flags."""
    if getattr(args, "model", None):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    return tiny_llama(args.vocab, hidden=args.hidden, layers=args.layers, heads=4, max_len=args.seq)


def describe_model(args: argparse.Namespace, model: torch.nn.Module) -> str:
    """One line naming the model the numbers belong to."""
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if getattr(args, "model", None):
        c = model.config
        return (f"model: {args.model} ({c.model_type}, {c.num_hidden_layers} layers x {c.hidden_size} hidden, "
                f"vocab {c.vocab_size}): {n / 1e6:.1f}M params")
    return f"model: Llama {args.layers} layers x {args.hidden} hidden, vocab {args.vocab}: {n / 1e6:.2f}M params"


def use_model_vocab(args: argparse.Namespace) -> None:
    """With ``--model``, random batches must draw token ids from that model's vocabulary."""
    if getattr(args, "model", None):
        from transformers import AutoConfig

        args.vocab = AutoConfig.from_pretrained(args.model).vocab_size


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image), in bytes.

    ``getrusage``'s ru_maxrss is not usable here: Linux carries it across ``execve``, so a child would report its
    parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
