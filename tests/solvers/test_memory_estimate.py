"""The memory estimator behind ``curate reweight --plan`` (solvers/memory.py): pure arithmetic, checked against
real models where it can be exact."""

from __future__ import annotations

import pytest

from solvers.lm import tiny_llama
from solvers.memory import ModelShape, estimate, fitting_alternative, plan_lines

# SmolLM2-135M's published config: 30 blocks, 576 hidden, 1536 MLP, 9 heads / 3 KV heads, vocab 49152, tied.
SMOL = ModelShape(vocab=49152, hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3, tied=True)


def test_param_counts_are_exact_for_llama():
    model = tiny_llama(300, hidden=32, layers=3, heads=4, max_len=16)
    shape = ModelShape.from_config(model.config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.block_params == sum(p.numel() for p in model.model.layers[0].parameters())
    assert SMOL.params == 134_515_008  # SmolLM2-135M's parameter count


def test_lora_param_count_matches_peft():
    from solvers.scalebio.lora import LoraSpec, lora_pair

    model = tiny_llama(300, hidden=32, layers=3, heads=4, max_len=16)
    u, _ = lora_pair(model, LoraSpec(r=4))
    assert ModelShape.from_config(model.config).lora_params(4) == sum(p.numel() for p in u.parameters())


def test_full_scalebio_tensors_are_exact_after_one_step():
    """Parameters, gradients and AdamW state of a consuming ScaleBiO state equal the full-variant estimate."""
    import torch

    from solvers.memory import breakdown
    from solvers.scalebio.step import init_state, scalebio_step

    model = tiny_llama(300, hidden=32, layers=3, heads=4, max_len=16)
    shape = ModelShape.from_config(model.config)
    state = init_state(model, 2, 1e-3, 1e-2, 0.0, 0.0, consume=True)
    assert state.u is model
    ids = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids,
             "source_ids": torch.tensor([0, 1, 0, 1])}
    scalebio_step(state, batch, batch, alpha=10.0, lr_model=1e-3, lr_lambda=1e-2, n_sources=2)
    held = breakdown([model, state.u, state.w], [state.opt_u, state.opt_w])
    e = estimate(shape, "full", 4, 16)
    assert (held.params, held.grads) == (e.params, e.grads)
    n_tensors = 2 * len(list(model.parameters()))
    assert 0 <= held.optimizer - e.optimizer <= 8 * n_tensors  # AdamW's scalar step counters are not estimated


def test_variants_order_and_ratios():
    e = {v: estimate(SMOL, v, batch=8, seq=512) for v in ("finetune", "full", "lisa", "lora")}
    assert e["full"].params == 2 * e["finetune"].params  # u trains the loaded model in place, w is a copy
    assert e["full"].optimizer == 2 * e["finetune"].optimizer
    assert e["lora"].optimizer < e["lisa"].optimizer < e["full"].optimizer
    assert e["lora"].total < e["lisa"].total < e["full"].total
    assert len({x.activations for x in e.values()}) == 1  # ScaleBiO runs one pass at a time
    assert estimate(SMOL, "full", 16, 512).activations > e["full"].activations
    sharded = estimate(SMOL, "full", 8, 512, shards=4)
    assert sharded.params == e["full"].params // 4 and sharded.activations == e["full"].activations
    with pytest.raises(ValueError, match="variant"):
        estimate(SMOL, "half", 8, 512)


def test_fitting_alternative_names_the_cheapest_change():
    kw = dict(val_batch=None, lisa_layers=2, lora_r=8)

    def total(variant, batch, shards=1, seq=512):
        return estimate(SMOL, variant, batch, seq, shards=shards).total

    assert fitting_alternative(SMOL, "full", 8, 512, total("full", 4), **kw).startswith("batch_size=4")
    # short sequences: the weights, not the activations, decide, and a smaller batch cannot help
    lisa = fitting_alternative(SMOL, "full", 8, 16, total("lisa", 8, seq=16), **kw)
    assert total("full", 1, seq=16) > total("lisa", 8, seq=16)
    assert lisa.startswith("lisa=true") and "batch_size" not in lisa
    # long sequences: activations decide, and recomputing them is the first change that fits
    ckpt = fitting_alternative(SMOL, "full", 8, 512, total("lisa", 2), **kw)
    assert ckpt == "gradient_checkpointing=true with batch_size=4 val_batch_size=4"
    assert estimate(SMOL, "full", 4, 512, checkpointing=True).total <= total("lisa", 2) < total("full", 1)
    already = fitting_alternative(SMOL, "full", 8, 512, total("lisa", 2), checkpointing=True, **kw)
    assert already is None or not already.startswith("gradient_checkpointing")
    lora = fitting_alternative(SMOL, "full", 8, 16, total("lora", 8, seq=16), **kw)
    assert lora.startswith("--lower-level lora")
    zero = fitting_alternative(SMOL, "lora", 1, 16, total("lora", 1, shards=2, seq=16) + 1, **kw)
    assert "ZeRO-3" in zero and "2 devices" in zero
    assert fitting_alternative(SMOL, "full", 8, 512, 10, **kw) is None
    # offloading the optimizer state to host memory is offered on a GPU only
    budget = estimate(SMOL, "lora", 1, 16, offload=True, checkpointing=True).total
    on_cpu = fitting_alternative(SMOL, "lora", 1, 16, budget, checkpointing=True, **kw)
    assert on_cpu.startswith("--launcher deepspeed --zero 3 --nproc 2")
    on_gpu = fitting_alternative(SMOL, "lora", 1, 16, budget, checkpointing=True, gpu=True, **kw)
    assert "offload_optimizer" in on_gpu


def test_checkpointing_keeps_block_inputs_only():
    plain, ckpt = SMOL.activation_bytes(8, 512), SMOL.activation_bytes(8, 512, checkpointing=True)
    logits = 3 * 8 * 512 * SMOL.vocab * 4
    assert ckpt < plain
    # blocks' inputs plus one block's internals: (plain - logits) / layers is one block's internals
    per_block = (plain - logits) // SMOL.layers
    assert ckpt == SMOL.layers * 8 * 512 * SMOL.hidden * SMOL.dtype_bytes + per_block + logits


def test_plan_lines_mark_the_chosen_variant():
    lines = plan_lines(SMOL, 8, 512, val_batch=8, lisa_layers=2, lora_r=8, chosen="lisa")
    assert len(lines) == 5 and "134.5M params" in lines[0]
    assert [i for i, line in enumerate(lines) if "this run" in line] == [3]


def test_less_lora_count_matches_its_adapters():
    """LESS's plan counts its default adapters (q, k, v, o of every block) exactly, grouped-query attention
    included."""
    from transformers import LlamaForCausalLM

    from baselines.less import LessConfig, add_lora, lora_params
    from solvers.lm import tiny_llama_config

    config = tiny_llama_config(300, hidden=32, layers=3, heads=4, max_len=16)
    config.num_key_value_heads = 2  # k and v are narrower than q and o
    model = LlamaForCausalLM(config)
    wrapped = add_lora(model, LessConfig(lora_r=4))
    counted = sum(p.numel() for p in lora_params(wrapped).values())
    assert ModelShape.from_config(model.config).attention_lora_params(4) == counted
    assert SMOL.attention_lora_params(8) == 30 * 8 * (2 * (576 + 576) + 2 * (576 + 192))


def test_baseline_estimates_count_their_model_copies():
    """RHO holds the base and its reference, DoReMi also the proxy; each trains one copy with AdamW."""
    from solvers.memory import doremi_estimate, less_estimate, rho_estimate

    b, p = SMOL.dtype_bytes, SMOL.params
    rho = rho_estimate(SMOL, 128, reference_batch=8, score_batch=8)
    doremi = doremi_estimate(SMOL, 128, batch=8)
    assert (rho.params, rho.grads, rho.optimizer) == (2 * p * b, p * b, 2 * p * b)
    assert (doremi.params, doremi.grads, doremi.optimizer) == (3 * p * b, p * b, 2 * p * b)
    assert doremi.total > rho.total > estimate(SMOL, "finetune", 8, 128).total
    less = less_estimate(SMOL, 128, lora_r=8, warmup_batch=8, warmup_epochs=4, grad_batch=16, proj_dim=8192,
                         proj_chunk_rows=1024, feature_buffer_mb=256)
    assert less.variant == "LESS features" and less.params == 2 * p * b + SMOL.attention_lora_params(8) * b
    bigger = less_estimate(SMOL, 128, lora_r=8, warmup_batch=8, warmup_epochs=4, grad_batch=16, proj_dim=8192,
                           proj_chunk_rows=1024, feature_buffer_mb=1024)
    assert bigger.buffers > less.buffers  # the gradient buffer is what feature_buffer_mb bounds
