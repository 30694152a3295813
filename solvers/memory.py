"""Memory of a training run: exact byte counts of live tensors, and estimates before anything is built.

Measurement (:func:`tensor_bytes`, :func:`optimizer_state_bytes`, :func:`breakdown`) counts each storage once,
so parameters shared by two modules (u and w over one LoRA base) are not counted twice. The estimator lives in
the second half of this module (:func:`estimate`); both are pure functions over tensors or plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (``None`` entries are skipped)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of an optimizer's per-parameter state tensors (AdamW: the two moments and the step count)."""
    return tensor_bytes(v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def params_with_state(opt: torch.optim.Optimizer) -> int:
    """Number of scalar parameters that hold optimizer state."""
    return sum(p.numel() for p, state in opt.state.items() if state)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes held by parameters, gradients and optimizer state (activations are transient and not counted)."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def breakdown(models: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer]) -> MemoryBreakdown:
    """What ``models`` (shared storages once) and ``optimizers`` hold right now."""
    params = [p for m in models for p in m.parameters()]
    return MemoryBreakdown(
        params=tensor_bytes(params),
        grads=tensor_bytes(p.grad for p in params),
        optimizer=sum(optimizer_state_bytes(o) for o in optimizers),
    )


# --------------------------------------------------------------------------------------------------------------
# Estimates before anything is built (``curate reweight --plan``)

GATED_ACTS = ("silu", "swiglu", "swish", "geglu", "gelu_pytorch_tanh_gated")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only LM that decide its memory (read from an HF config by :meth:`from_config`)."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool = False
    gated: bool = True
    """Gated MLP (Llama/Qwen/Mistral: gate, up and down projections) rather than GPT-2's two matrices."""
    dtype_bytes: int = 4

    @classmethod
    def from_config(cls, config: object, dtype_bytes: int = 4) -> ModelShape:
        """Shape from a transformers ``PretrainedConfig`` (Llama-style or GPT-2-style attribute names)."""
        def get(*names: str, default: int | None = None) -> int:
            for n in names:
                value = getattr(config, n, None)
                if value is not None:
                    return int(value)
            if default is None:
                raise ValueError(f"model config has none of {names}")
            return default

        hidden = get("hidden_size", "n_embd", "d_model")
        heads = get("num_attention_heads", "n_head")
        act = str(getattr(config, "hidden_act", getattr(config, "activation_function", "gelu")))
        return cls(vocab=get("vocab_size"), hidden=hidden, layers=get("num_hidden_layers", "n_layer"),
                   intermediate=get("intermediate_size", "n_inner", default=4 * hidden), heads=heads,
                   kv_heads=get("num_key_value_heads", default=heads),
                   tied=bool(getattr(config, "tie_word_embeddings", False)), gated=act in GATED_ACTS,
                   dtype_bytes=dtype_bytes)

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def block_params(self) -> int:
        """Parameters of one transformer block (attention, MLP, two norms)."""
        h, i = self.hidden, self.intermediate
        return 2 * h * h + 2 * h * self.kv_dim + (3 if self.gated else 2) * h * i + 2 * h

    @property
    def outer_params(self) -> int:
        """Parameters outside the blocks (embeddings, final norm, LM head): LISA always trains these."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.outer_params

    def lora_params(self, r: int) -> int:
        """Parameters of one LoRA adapter of rank ``r`` on every linear layer of every block (``all-linear``)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        per_block = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * (2 if self.gated else 1) + (i + h))
        return self.layers * per_block

    def attention_lora_params(self, r: int) -> int:
        """Parameters of a rank-``r`` LoRA adapter on the attention projections q, k, v, o of every block (LESS's
        default targets): r·(h+h) for q and o, r·(h+kv) for k and v."""
        h, kv = self.hidden, self.kv_dim
        return self.layers * r * (2 * (h + h) + 2 * (h + kv))

    def forward_bytes(self, batch: int, seq: int) -> int:
        """A no-grad forward of batch × seq tokens (scoring, a reference's loss): nothing is saved for a backward,
        so the fp32 logits and their log-softmax dominate, plus a few hidden states alive at a time."""
        tokens = batch * seq
        return tokens * (2 * self.vocab * 4 + 4 * self.hidden * self.dtype_bytes)

    def activation_bytes(self, batch: int, seq: int, checkpointing: bool = False) -> int:
        """Tensors one forward saves for its backward, batch × seq tokens (eager attention, no checkpointing):
        per block the norms' and rotary embedding's intermediates, q/k/v, the attention scores and probabilities
        and the MLP's hidden states, plus the fp32 logits, their log-softmax and gradient. A rough estimate: on
        the 10.5M-parameter benchmark model (batch 8 × 128) it gives 0.37 GiB where fine-tuning's measured peak
        RSS above parameters, gradients and optimizer state was 0.57 GiB (allocator slack included)."""
        h, i, tokens = self.hidden, self.intermediate, batch * seq
        per_layer = tokens * (16 * h + 5 * self.kv_dim + (5 if self.gated else 3) * i) * self.dtype_bytes
        per_layer += 3 * batch * self.heads * seq * seq * self.dtype_bytes
        logits = 3 * tokens * self.vocab * 4
        if checkpointing:  # each block's input is kept; one block's internals exist at a time, in its recompute
            return self.layers * tokens * h * self.dtype_bytes + per_layer + logits
        return self.layers * per_layer + logits


@dataclass(frozen=True)
class Estimate:
    """Estimated peak bytes of one variant (parameters of every copy held, gradients, optimizer, activations, and
    a method's own buffers: LESS's per-example gradients, projection slice and checkpoints)."""

    variant: str
    params: int
    grads: int
    optimizer: int
    activations: int
    buffers: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.buffers


def estimate(shape: ModelShape, variant: str, batch: int, seq: int, *, val_batch: int | None = None,
             lisa_layers: int = 2, lora_r: int = 8, shards: int = 1, checkpointing: bool = False,
             offload: bool = False) -> Estimate:
    """Peak memory of one training variant on one device.

    ``variant``: ``"finetune"`` (plain AdamW, one model), ``"full"`` (ScaleBiO, u and w full copies), ``"lisa"``
    (u and w train ``lisa_layers`` blocks plus the outer parameters, state released on freeze) or ``"lora"``
    (u and w adapters of rank ``lora_r`` over one base). ScaleBiO variants are counted as ``curate reweight``
    runs them (``fit(..., consume=True)``: u is the loaded model, w a copy), with one pass's activations at a
    time (its passes run one after another). AdamW holds two moments per trained parameter, in the parameter's
    dtype. ``shards > 1`` divides parameters, gradients and optimizer state over that many devices (ZeRO-3);
    activations are per device. ``checkpointing``: gradient checkpointing (see
    :meth:`ModelShape.activation_bytes`). ``offload``: DeepSpeed ZeRO keeps the optimizer state in host memory,
    so it leaves the device's total.
    """
    b, p = shape.dtype_bytes, shape.params
    acts = shape.activation_bytes(max(batch, val_batch or batch), seq, checkpointing)
    if variant == "finetune":
        held, trained = p, p
    elif variant == "full":
        held, trained = 2 * p, 2 * p
    elif variant == "lisa":
        held, trained = 2 * p, 2 * (shape.outer_params + min(lisa_layers, shape.layers) * shape.block_params)
    elif variant == "lora":
        adapters = 2 * shape.lora_params(lora_r)
        held, trained = p + adapters, adapters
    else:
        raise ValueError(f"variant must be finetune, full, lisa or lora, got {variant!r}")
    optimizer = 0 if offload else 2 * trained * b // shards
    return Estimate(variant, held * b // shards, trained * b // shards, optimizer, acts)


# The baselines, as ``curate reweight`` runs them: the loaded base is moved to the device and stays held by the
# pipeline (P parameters of ``dtype_bytes`` b each), and every method trains deep copies of it. AdamW keeps two
# moments per trained parameter; A(B) is :meth:`ModelShape.activation_bytes` of a batch of B rows, F(B) the no-grad
# :meth:`ModelShape.forward_bytes`. bf16 autocast (GPU) is not credited: it shrinks activations, and the estimate
# should err high.

def rho_estimate(shape: ModelShape, seq: int, *, reference_batch: int, score_batch: int) -> Estimate:
    """RHO at its peak, fitting the reference: the base (scored against later) and the reference copy, 2·P·b;
    the reference's gradients P·b and AdamW moments 2·P·b; activations max(A(reference_batch), F(score_batch))
    (the scoring passes hold no gradients or optimizer, so they never need more than that). Total ≈ 5·P·b + A."""
    b, p = shape.dtype_bytes, shape.params
    acts = max(shape.activation_bytes(reference_batch, seq), shape.forward_bytes(score_batch, seq))
    return Estimate("RHO", 2 * p * b, p * b, 2 * p * b, acts)


def doremi_estimate(shape: ModelShape, seq: int, *, batch: int) -> Estimate:
    """DoReMi at its peak, the Group-DRO proxy phase: the base, the reference and the proxy, 3·P·b; the proxy's
    gradients P·b and AdamW moments 2·P·b (the reference's optimizer is gone once its fit ends); activations of
    one proxy batch plus the reference's no-grad pass on it, A(batch) + F(batch). Total ≈ 6·P·b + A + F."""
    b, p = shape.dtype_bytes, shape.params
    acts = shape.activation_bytes(batch, seq) + shape.forward_bytes(batch, seq)
    return Estimate("DoReMi", 3 * p * b, p * b, 2 * p * b, acts)


def less_estimate(shape: ModelShape, seq: int, *, lora_r: int, warmup_batch: int, warmup_epochs: int,
                  grad_batch: int, proj_dim: int, proj_chunk_rows: int, feature_buffer_mb: float) -> Estimate:
    """LESS at the larger of its two phases. L = :meth:`ModelShape.attention_lora_params` (LESS's default
    targets; other ``target_modules`` are planned as these).

    Both phases hold the base and its LoRA copy, 2·P·b + L·b, and one checkpoint per finished warmup epoch
    (LoRA weights and two Adam moments), 3·E·L·b.
    - warmup: the adapters' gradients L·b, AdamW moments 2·L·b, activations A(warmup_batch_size);
    - features: activations of one vmapped per-example-gradient call, A(grad_batch_size), and the buffers, in
      fp32: the gathered group of G rows awaiting projection and its concatenation, 2·G·L·4, with
      G = max(1, ⌊feature_buffer_mb·2²⁰ / (4·L)⌋ // grad_batch_size)·grad_batch_size; the call's own gradients,
      flattened copy and Adam-direction temporaries, 5·grad_batch_size·L·4; one slice of the projection matrix,
      C·d·4 + 128·d (C = proj_chunk_rows rounded up to 128, at most L rounded up; d = proj_dim; the int8 block
      being drawn), and the group's projected features G·d·4. G is planned full (the pool is not read for a
      plan; a pool of fewer rows fills less of it). The ``[N, tasks]`` score table (4 bytes a row and task) is
      left out: it is small next to any of these.
    """
    b, p, lora, f32 = shape.dtype_bytes, shape.params, shape.attention_lora_params(lora_r), 4
    held, checkpoints = 2 * p * b + lora * b, 3 * warmup_epochs * lora * b
    warm = Estimate("LESS warmup", held, lora * b, 2 * lora * b, shape.activation_bytes(warmup_batch, seq),
                    checkpoints)
    group = max(1, int(feature_buffer_mb * 2**20 // (f32 * lora)) // grad_batch) * grad_batch
    chunk = min(-(-proj_chunk_rows // 128) * 128, -(-lora // 128) * 128)
    buffers = (2 * group + 5 * grad_batch) * lora * f32 + chunk * proj_dim * f32 + 128 * proj_dim
    buffers += group * proj_dim * f32
    features = Estimate("LESS features", held, 0, 0, shape.activation_bytes(grad_batch, seq),
                        checkpoints + buffers)
    return max(warm, features, key=lambda e: e.total)


def available_memory(device: str = "cpu") -> int:
    """Bytes free for a run: CUDA free memory for a ``cuda`` device, else the host's MemAvailable."""
    if device.startswith("cuda"):
        import torch as _torch

        free, _ = _torch.cuda.mem_get_info(_torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def human(n: int) -> str:
    """Bytes as GiB (or MiB below 1 GiB), for plans and reports."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def plan_lines(shape: ModelShape, batch: int, seq: int, *, val_batch: int | None, lisa_layers: int, lora_r: int,
               chosen: str, checkpointing: bool = False) -> list[str]:
    """One line per variant for ``--plan``: the breakdown and total, the chosen one marked."""
    lines = [model_line(shape, batch, seq, checkpointing)]
    for variant in ("finetune", "full", "lisa", "lora"):
        e = estimate(shape, variant, batch, seq, val_batch=val_batch, lisa_layers=lisa_layers, lora_r=lora_r,
                     checkpointing=checkpointing)
        label = {"finetune": "fine-tune (reference)", "full": "ScaleBiO full", "lisa": f"ScaleBiO LISA({lisa_layers})",
                 "lora": f"ScaleBiO LoRA(r={lora_r})"}[variant]
        lines.append(estimate_line(label, e, variant == chosen))
    return lines


def model_line(shape: ModelShape, batch: int, seq: int, checkpointing: bool = False) -> str:
    """The plan's first line: the model's size and the micro batch every estimate below is for."""
    return (f"model: {shape.params / 1e6:.1f}M params ({shape.layers} blocks x {shape.block_params / 1e6:.2f}M, "
            f"{shape.outer_params / 1e6:.1f}M outside), {shape.dtype_bytes}-byte weights; micro batch {batch} x "
            f"{seq} tokens" + ("; gradient checkpointing" if checkpointing else ""))


def estimate_line(label: str, e: Estimate, chosen: bool = False) -> str:
    """One ``--plan`` line: the breakdown and total of ``e`` (buffers only when the method has any)."""
    buffers = f", buffers {human(e.buffers)}" if e.buffers else ""
    mark = "  <- this run" if chosen else ""
    return (f"  {label:<24} params {human(e.params)}, grads {human(e.grads)}, optimizer {human(e.optimizer)}, "
            f"activations {human(e.activations)}{buffers}: total {human(e.total)}{mark}")


def fitting_alternative(shape: ModelShape, chosen: str, batch: int, seq: int, budget: int, *,
                        val_batch: int | None, lisa_layers: int, lora_r: int, checkpointing: bool = False,
                        gpu: bool = False) -> str | None:
    """The first change that brings a run under ``budget`` bytes, as the options to set; None if none does.

    Tried in order, each first at the same micro batch and then with smaller ones: gradient checkpointing; LISA;
    LoRA; on a GPU, ZeRO with the optimizer state offloaded to host memory (one device suffices); ZeRO-3 over
    2, 4 or 8 devices. A smaller micro batch alone comes first of all.
    """
    def fits(option: tuple[str, int, bool, bool], b: int) -> bool:
        variant, shards, ckpt, offload = option
        vb = None if val_batch is None else max(1, min(val_batch, b))
        return estimate(shape, variant, b, seq, val_batch=vb, lisa_layers=lisa_layers, lora_r=lora_r,
                        shards=shards, checkpointing=ckpt, offload=offload).total <= budget

    def describe(option: tuple[str, int, bool, bool]) -> str:
        variant, shards, ckpt, offload = option
        if offload:
            return ("--launcher deepspeed --deepspeed-config with zero_optimization.offload_optimizer.device: cpu "
                    "(optimizer state in host memory)")
        if shards > 1:
            return f"--launcher deepspeed --zero 3 --nproc {shards} (ZeRO-3 sharding over {shards} devices)"
        if variant != chosen:
            return {"lisa": f"lisa=true lisa_layers={lisa_layers} (LISA)",
                    "lora": f"--lower-level lora lora_r={lora_r} (LoRA shared base)"}[variant]
        return "gradient_checkpointing=true"

    smaller = []
    b = batch
    while b > 1:
        b //= 2
        smaller.append(b)
    same = (chosen, 1, checkpointing, False)
    for b in smaller:
        if fits(same, b):
            return f"batch_size={b} val_batch_size={b} (smaller micro batch)"
    others = [] if checkpointing else [(chosen, 1, True, False)]
    others += [(v, 1, checkpointing, False) for v in ("lisa", "lora")
               if v != chosen and not (chosen == "lora" and v == "lisa")]
    others += [(chosen, 1, checkpointing, True)] if gpu else []  # one GPU suffices, unlike sharding
    others += [(chosen, n, checkpointing, False) for n in (2, 4, 8)]
    for b in [batch, *smaller]:
        for option in others:
            if fits(option, b):
                micro = "" if b == batch else f" with batch_size={b} val_batch_size={b}"
                return describe(option) + micro
    return None
