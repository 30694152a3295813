"""Pieces every benchmark script shares: the synthetic batch, the fine-tuning reference, the model, memory probes.

Benchmarks are scripts (`python benchmarks/bench_x.py`), so this module is imported by its bare name.
"""

from __future__ import annotations

import argparse

import torch

from solvers.lm import per_example_loss, tiny_llama


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


def new_model(args: argparse.Namespace) -> torch.nn.Module:
    """The benchmark's Llama-style model, from the script's size flags."""
    return tiny_llama(args.vocab, hidden=args.hidden, layers=args.layers, heads=4, max_len=args.seq)


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
