"""Hyperparameters of one ScaleBiO run (ALGORITHMS.md §2, §5).
 One frozen dataclass; ``__post_init__`` rejects impossible values with a message that names the field. The
defaults are the ones the tests run with on tiny CPU problems, unchanged (a strongly convex bilevel problem
posed at an LM's parameter scale, and planted-noise arithmetic sources); for a pretrained LLM use the paper's
values instead (``lr_model`` 1e-5..2e-6, ``lr_lambda`` 1e-2, ``alpha`` 100, ``warmup_ratio`` 0.03,
``grad_clip`` 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal


@dataclass(frozen=True)
class ScaleBiOConfig:
    """Everything :func:`solvers.scalebio.fit` needs besides the model and the data."""

    alpha: float = 10.0
    """Penalty α on the lower-level gap L2(λ, w) − L2(λ, u) (in the first stage when ``tau > 1``). The penalty
    problem's own bias on the weights shrinks like 1/α: on the convex test problem ||p − p*||₁ is about 0.03
    at α = 1 and 0.006 at α = 10, so 10 is the smallest value whose bias is well below the noise of a
    stochastic run. Much larger α makes w ignore the target pull for a fixed step budget (the paper uses 100
    with ~200 steps)."""

    lr_model: float = 3e-3
    """Peak AdamW learning rate of both models u and w. 3e-3 suits tiny models trained from scratch (the
    planted-noise test); pretrained LLMs want the paper's 1e-5..2e-6."""

    lr_lambda: float = 0.02
    """Peak AdamW learning rate of the logits λ.

    λ must move on a slower time scale than u and w, which should track their minimisers for the current
    weights: keep λ's step at most about a fifth of the models' *in units of how far each must travel*. With
    Adam a step moves a parameter by about its learning rate whatever the gradient's size, so what counts is
    the step relative to the distance to the optimum. An LM's weights are ~0.02-0.1 in size and start near
    their optimum (a pretrained or briefly trained model), so an Adam step of 3e-3 moves them by several
    percent of their scale; λ's logits must travel O(1), so 0.02 is 2-5x slower than the models. On the convex
    test problem posed at that parameter scale (``tests/solvers/test_scalebio_convex.py``, all defaults, 300
    steps) 0.02 reaches the bilevel optimum for 9 of 10 minibatch seeds (mean ||p − p*||₁ 0.02); 0.05 fails
    every seed there because λ runs ahead of the models, and 0.01 passes the convex test but is too slow for
    the planted-noise check in 300 steps (the fully corrupted source stays at 0.11 > 1/(2K) for one seed).
    At 0.02 the planted-noise check ends with the clean source at 0.74-0.90 and the corrupted one at
    0.01-0.024 (3 seeds).

    With Adam the logits move about ``lr_lambda`` per step, so ``lr_lambda · steps / 2`` (cosine) bounds how
    far the weights can travel: raise ``steps`` rather than ``lr_lambda`` for sharper weights. The paper uses
    1e-2 over ~200 steps, which gives moderate weights (0.06-0.19 for 10 sources)."""

    weight_decay: float = 5e-4
    """Decoupled AdamW weight decay on u and w (the authors' value)."""

    lambda_weight_decay: float = 0.01
    """AdamW weight decay on λ (torch's default, which the authors kept); it pulls the logits gently toward
    uniform."""

    steps: int = 300
    """Total number of simultaneous (u, w, λ) updates, over all α stages."""

    batch_size: int = 40
    """Training rows per step, shared by the u and w passes. Used to build the samplers
    (:func:`make_samplers`); :func:`fit` checks that the samplers it is given agree, so the saved config
    describes the run."""

    val_batch_size: int = 32
    """Target (validation) rows per step for the upper-level loss L1."""

    sampling: Literal["stratified", "proportional"] = "stratified"
    """How training rows are drawn. ``"stratified"`` (equal rows per source per batch) is an unbiased,
    lower-variance estimate of Σ p_i ℓ̄_i and never leaves a source out of a batch (ALGORITHMS.md pitfall 7);
    it differs from the authors' ``"proportional"`` (uniform over the concatenation of all sources)."""

    tau: float = 1.0
    """Growth factor of α between stages (the paper's τ). Stage i uses α·τ^i and scales all three step sizes
    by τ^-i, as the paper's Algorithm 1 does; growing α without shrinking the steps diverged with minibatches
    in the reference run, so the two are not offered separately. ``tau=1`` (the default, and every released
    script) keeps α fixed. Note the authors' code multiplies α by τ before the first stage, so their α0 is our
    ``alpha / tau``. At each stage boundary the AdamW moments of u, w and λ are reset (a departure from the
    code): the gradients of w and λ jump by τ with α, and Adam's second moments would remember the old scale for
    ~1/(1 − β2) steps, letting λ run ahead of u; on the convex test that pushed p 0.06 away from the optimum."""

    stages: int = 1
    """Number of α stages N; the ``steps`` are split evenly between them (the last takes the remainder)."""

    schedule: Literal["cosine", "constant"] = "cosine"
    """Shape s(t) of the step-size factor shared by all three learning rates (ALGORITHMS.md §5.3): cosine to 0
    over all ``steps``, after a linear warmup of ``warmup_ratio · steps`` steps; or constant after the warmup.
    Cosine is the authors' choice and makes the final weights settle, since η_λ decays to 0 too."""

    warmup_ratio: float = 0.0
    """Fraction of the steps spent in linear warmup, s(t) = t / W (the authors use 0 or 0.03)."""

    grad_clip: float | None = 1.0
    """Clip the gradient norm of u at this value and of w at ``alpha · grad_clip`` (w's loss is L1 + α·L2, so
    this is the authors' clip of ||∇|| ≤ α on the α-scaled loss, ALGORITHMS.md pitfall 11). ``None`` disables
    clipping."""

    lisa: bool = False
    """Train only ``lisa_layers`` randomly drawn transformer blocks of u and of w at a time (drawn
    independently); embeddings, final norm and LM head always train (ALGORITHMS.md §3). Needs a model whose
    block list :func:`solvers.lm.find_blocks` can find."""

    lisa_layers: int = 2
    """γ: number of active blocks per model under LISA (the authors' default; their Llama-3 LISA script uses
    4)."""

    lisa_period: int = 20
    """T: LISA redraws the active blocks at steps 0, T, 2T, ... (the authors' ``--lisa-step``)."""

    lisa_release_state: bool = True
    """Drop the AdamW moments of a block when LISA freezes it (the default). PyTorch's AdamW keeps a frozen
    parameter's state, so without this every block that was ever drawn holds its two moments and after a few
    periods LISA's optimizer memory is that of full training; with it the state is bounded by the γ active
    blocks plus the embeddings, final norm and head (``tests/solvers/test_scalebio_memory.py``). A redrawn block
    starts Adam afresh (zero moments, bias correction from step 1), as at the start of the run. ``False`` keeps
    the moments, as the authors' code does (a block resumes with the moments it had when it was last frozen)."""

    lower_level: Literal["full", "lora"] = "full"
    """How u and w are held. ``"full"``: two independent full copies of the model (the paper's method).
    ``"lora"``: two LoRA adapters (peft) over one frozen copy of the base, so the base weights are held once and
    only the adapters have gradients and AdamW state (:mod:`solvers.scalebio.lora`); excludes ``lisa``. The
    authors' LoRA path uses r=128, lora_alpha=32, dropout 0.05."""

    lora_r: int = 8
    """LoRA rank of each adapter (``lower_level="lora"``)."""

    lora_alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``)."""

    lora_dropout: float = 0.0
    """Dropout on the adapters' input."""

    lora_target: str = "all-linear"
    """Modules that get adapters: ``"all-linear"`` (every linear layer but the head) or a comma-separated list
    of module names (e.g. ``"q_proj,v_proj"``)."""

    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many steps when ``checkpoint_dir`` is given (0: only on
    interrupt)."""

    seed: int = 0
    """Seeds torch's RNG (dropout) inside the run and the LISA block draws. The samplers carry their own
    seeds."""

    eval_mode: bool = True
    """Compute the target loss L1 with w in eval mode (no dropout). The authors keep train mode; eval mode
    removes dropout noise from the hypergradient, which is better for tiny models (ALGORITHMS.md pitfall
    9)."""

    autocast_bf16: bool = False
    """Run the model passes under ``torch.autocast("cuda", bfloat16)``; CUDA only. λ, p and the weighted sums
    stay fp32 in every case."""

    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping them (Hugging Face
    ``gradient_checkpointing_enable``, non-reentrant) on u and w: activation memory drops to about one block's
    worth per pass, for roughly one extra forward pass of compute. It applies to the training passes; the
    target pass runs in eval mode by default (``eval_mode``), where transformers does not checkpoint. Needs a
    Hugging Face model."""

    average_from: float = 0.5
    """The averaged weights are the mean of p over steps ``t >= average_from · steps`` (default: the second
    half)."""

    def __post_init__(self) -> None:
        positive = ("alpha", "lr_model", "lr_lambda", "steps", "batch_size", "val_batch_size", "tau",
                    "stages", "lisa_layers", "lisa_period")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"ScaleBiOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "lambda_weight_decay", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"ScaleBiOConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "val_batch_size", "stages", "lisa_layers", "lisa_period",
                     "checkpoint_every", "seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"ScaleBiOConfig.{name} must be an integer, got {getattr(self, name)!r}")
        if self.tau < 1:
            raise ValueError(f"ScaleBiOConfig.tau must be >= 1 (α only grows), got {self.tau!r}")
        if self.stages > self.steps:
            raise ValueError(f"ScaleBiOConfig.stages ({self.stages}) must not exceed steps ({self.steps})")
        if self.sampling not in ("stratified", "proportional"):
            raise ValueError(
                f"ScaleBiOConfig.sampling must be 'stratified' or 'proportional', got {self.sampling!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"ScaleBiOConfig.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("warmup_ratio", "average_from"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"ScaleBiOConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.lower_level not in ("full", "lora"):
            raise ValueError(f"ScaleBiOConfig.lower_level must be 'full' or 'lora', got {self.lower_level!r}")
        if self.lower_level == "lora":
            if self.lisa:
                raise ValueError("ScaleBiOConfig.lisa and lower_level='lora' exclude each other (LoRA already "
                                 "trains only the adapters); pick one")
            if not isinstance(self.lora_r, int) or isinstance(self.lora_r, bool) or self.lora_r <= 0:
                raise ValueError(f"ScaleBiOConfig.lora_r must be a positive integer, got {self.lora_r!r}")
            if not self.lora_alpha > 0:
                raise ValueError(f"ScaleBiOConfig.lora_alpha must be > 0, got {self.lora_alpha!r}")
            if not 0 <= self.lora_dropout < 1:
                raise ValueError(f"ScaleBiOConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
            if not self.lora_target.strip():
                raise ValueError("ScaleBiOConfig.lora_target must name modules or be 'all-linear'")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"ScaleBiOConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}")

    def to_dict(self) -> dict[str, object]:
        """Plain ``{field: value}`` mapping (what checkpoints store and compare on resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
