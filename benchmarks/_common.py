"""Pieces every benchmark script shares: the size and device flags, the synthetic batch, the fine-tuning reference,
the ScaleBiO runner, the model, memory probes (RSS on the CPU, the CUDA allocator on a GPU).

Benchmarks are scripts (`python benchmarks/bench_x.py`), so this module is imported by its bare name.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import torch

from solvers.device import bf16_autocast
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


def add_device_args(ap: argparse.ArgumentParser) -> None:
    """``--device`` and ``--bf16``: where the model and batches live, and CUDA bf16 autocast over fp32 weights."""
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (memory is then the CUDA allocator's)")
    ap.add_argument("--bf16", action="store_true", help="model passes under CUDA bf16 autocast (GPU only)")


def check_device_args(args: argparse.Namespace) -> None:
    """Refuse a device torch cannot use, or ``--bf16`` off CUDA, in one line (exit 2) before any model is built."""
    problem = None
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        problem = f"--device: {args.device!r} is not cpu, cuda or cuda:N"
    elif args.device != "cpu" and not torch.cuda.is_available():
        problem = f"--device {args.device}: torch sees no GPU here; use --device cpu"
    elif args.bf16 and args.device == "cpu":
        problem = "--bf16: autocast is CUDA only; add --device cuda or drop --bf16"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a wall-clock step time is the step's."""
    if device != "cpu":
        torch.cuda.synchronize(device)


def memory_now(device: str) -> int:
    """Bytes in use now: the process RSS on the CPU, the CUDA allocator's live bytes on a GPU."""
    return proc_status_bytes("VmRSS") if device == "cpu" else torch.cuda.memory_allocated(device)


def memory_peak(device: str) -> int:
    """Peak bytes so far: VmHWM on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU."""
    return proc_status_bytes("VmHWM") if device == "cpu" else torch.cuda.max_memory_allocated(device)


def make_batch(args: argparse.Namespace, seed: int) -> dict[str, torch.Tensor]:
    """Random tokens; the first quarter of each row is a masked prompt, the rest is the response; on
    ``args.device`` (drawn on the CPU so every device gets the same tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, args.vocab, (args.batch, args.seq), generator=g)
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "source_ids": torch.arange(args.batch) % args.sources}
    return {k: v.to(getattr(args, "device", "cpu")) for k, v in batch.items()}


class FineTune:
    """Plain full-parameter fine-tuning: the same loss (response-token mean per example), clipping and AdamW as
    ScaleBiO's u, the reference every ratio is taken against."""

    def __init__(self, model: torch.nn.Module, autocast_bf16: bool = False) -> None:
        self.model, self.autocast_bf16 = model, autocast_bf16
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)

    def step(self, batch: dict[str, torch.Tensor], _val: dict[str, torch.Tensor]) -> None:
        self.model.zero_grad(set_to_none=True)
        with bf16_autocast(self.autocast_bf16):
            loss = per_example_loss(self.model, batch).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()


class ScaleBiO:
    """One ScaleBiO step (u, w and λ updates) at fixed hyper-parameters, optionally with LISA on u and w.

    ``lora``/``consume`` are passed to :func:`solvers.scalebio.step.init_state`; ``release_state`` to
    :class:`~solvers.scalebio.lisa.Lisa` (whether frozen blocks give their AdamW moments back); ``autocast_bf16``
    to :func:`~solvers.scalebio.step.scalebio_step`.
    """

    def __init__(self, model: torch.nn.Module, n_sources: int, *, lisa_layers: int | None = None,
                 lisa_period: int = 20, release_state: bool = True, lora: Any = None, consume: bool = False,
                 autocast_bf16: bool = False) -> None:
        self.state = init_state(model, n_sources, 1e-4, 1e-2, 5e-4, 0.01, lora=lora, consume=consume)
        self.n_sources, self.t, self.autocast_bf16 = n_sources, 0, autocast_bf16
        self.lisa = (Lisa([self.state.u, self.state.w], lisa_layers, lisa_period, 0, release_state=release_state)
                     if lisa_layers else None)

    def step(self, batch: dict[str, torch.Tensor], val: dict[str, torch.Tensor]) -> None:
        if self.lisa is not None:
            self.lisa.maybe_redraw(self.t, [self.state.opt_u, self.state.opt_w])
        scalebio_step(self.state, batch, val, alpha=10.0, lr_model=1e-4, lr_lambda=1e-2, n_sources=self.n_sources,
                      autocast_bf16=self.autocast_bf16)
        self.t += 1


def new_model(args: argparse.Namespace) -> torch.nn.Module:
    """The benchmark's model: a local Hugging Face folder when ``args.model`` is set (fp32, eager attention, as
    ScaleBiO runs it on CPU), else a Llama-style model from the script's size flags; on ``args.device``."""
    device = getattr(args, "device", "cpu")
    if getattr(args, "model", None):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                    attn_implementation="eager").to(device)
    return tiny_llama(args.vocab, hidden=args.hidden, layers=args.layers, heads=4, max_len=args.seq).to(device)


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


class FixedBatches:
    """The one batch every step of the benchmark uses, shaped as the sampler ``fit_distributed`` reads."""

    def __init__(self, batch: dict[str, torch.Tensor], n_sources: int) -> None:
        self.batch, self.batch_size = batch, len(batch["input_ids"])
        self.data = SimpleNamespace(sources=[f"s{i}" for i in range(n_sources)])

    def next(self) -> dict[str, torch.Tensor]:
        return self.batch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


DS_PROCS = 2
"""Ranks of the benchmarks' DeepSpeed rows (gloo, CPU)."""


def run_ranks(script: str, script_args: list[str], threads: int) -> subprocess.CompletedProcess[str]:
    """``script`` on :data:`DS_PROCS` torchrun ranks (gloo, ``DS_ACCELERATOR=cpu``) on a free port, each rank with
    ``threads // DS_PROCS`` threads, so together they use what one process of the benchmark uses."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    per_rank = max(1, threads // DS_PROCS)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={DS_PROCS}", "--master_addr=127.0.0.1",
           f"--master_port={port}", os.path.abspath(script), *script_args, f"--threads={per_rank}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(per_rank)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True)
