"""ScaleBiO on several processes with DeepSpeed ZeRO: u and w are each a DeepSpeed engine, and the loop and the
step are the single-process ones (:func:`solvers.scalebio.fit` with :class:`DeepSpeedEngine`).

Run every rank under ``torchrun`` (or the ``deepspeed`` launcher); on CPU set ``DS_ACCELERATOR=cpu`` (gloo is
used). Every rank draws the same global batch from identically seeded samplers and trains on its own slice
``rows[rank::world]``; the estimators are those of the global batch (:func:`solvers.scalebio.step.accumulate_grads`:
per-source counts and target tokens are summed over ranks, each rank's losses are scaled so that the engines'
gradient average is the global-batch gradient, λ's gradient is all-reduced and every rank takes the same AdamW
step, so λ stays identical everywhere). Only the reductions, the backward and the optimizer step differ from one
process; everything else (LISA, the LoRA lower level, α stages, bf16 autocast on CUDA, the NaN stop, periodic and
Ctrl-C checkpoints, resume) is the same code.

u and w each get their own ``torch.optim.AdamW`` (passed in with ``zero_allow_untested_optimizer``, which avoids
compiling DeepSpeed's fused_adam) and ``gradient_clipping`` of ``grad_clip`` (u) and ``α·grad_clip`` (w).

What ZeRO cannot do natively, and what this module does instead:

- **LISA** (ZeRO-1/2/3). ZeRO partitions what trains when the engine is built, so every LISA draw rebuilds both
  engines over the new active set (as LMFlow's LISA trainer re-creates its DeepSpeed optimizer on each switch).
  The AdamW moments of the parameters that keep training (embeddings, head, blocks drawn again) are carried over
  through DeepSpeed's tensor-fragment API (``safe_get/set_full_optimizer_state``; under ZeRO-3 each rank carries
  its own partitions, ``safe_get/set_local_optimizer_state``), grouped by their step count so bias correction
  matches one process; the frozen blocks' moments are dropped (``lisa_release_state``), so each
  rank holds fp32 copies, gradients and moments of the active blocks only. Under ZeRO-3 the first engine
  partitions every parameter of the module, frozen or not, and the module stays partitioned: a rebuild releases
  every gathered parameter, destroys the old engine, strips what it left on the module (:func:`_unhook_zero3`)
  and builds the new one over the same partitioned module, as over a ``zero.Init`` model: a rebuild gathers no
  parameter, and each rank keeps its partitions (of frozen blocks too) where they are. Refused: LISA at ZeRO-0
  and ``lisa_release_state=False``.
- **α stages.** A new stage rebuilds both engines (w's clipping follows α, and the moments reset as on one process).
- **LoRA** (ZeRO-0/1/2). u and w are engines over the two adapter views of one shared, frozen base (held whole
  on every rank); only the adapters are partitioned. ZeRO-3 would partition the base twice and is refused.
- **w's two losses** (α·L2 and L1) are backpropagated together (one ``engine.backward`` per step and engine),
  so both of w's graphs are alive at once, unlike one process's two backward passes.
- **Checkpoints** are DeepSpeed's own format, one folder per engine (``deepspeed/u``, ``deepspeed/w``, tag
  ``step<N>``), plus rank 0's ``scalebio.pt`` with λ, its optimizer, the samplers, RNG states, LISA's draw, the
  engines' parameter groups and the trajectory; ``scalebio.pt`` is written last and atomically, so a kill at any
  moment leaves the previous complete checkpoint. The folder must be one every rank sees.
- A **non-finite gradient** norm is found after DeepSpeed's step (it clips inside it); the run then stops with
  :class:`~solvers.scalebio.step.NonFiniteLossError` and the last checkpoint on disk is the last good state.

A user's own DeepSpeed config (``ds_config``; ``curate reweight --deepspeed-config FILE``) is the base of both
engines' configs (:func:`engine_config`): its ZeRO offload, bucket and precision settings are kept; curate sets
the batch sizes, gradient accumulation (1), clipping and the optimizer flags on top, refuses ``optimizer`` and
``scheduler`` blocks and batch/clipping values other than its own, and an explicit ``zero_stage`` (``--zero``)
beats the file's ``zero_optimization.stage``. Under ZeRO-3 the bucket and gathering sizes the file leaves unset
are scaled to the model's hidden size (:func:`zero3_defaults`). ZeRO-Offload runs curate's torch AdamW on the host
(``zero_force_ds_cpu_optimizer`` is off): it works with ``DS_ACCELERATOR=cpu``, but is not DeepSpeedCPUAdam-fast.

deepspeed is optional (``pip install 'curate[deepspeed]'``); this is the only module that imports it.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from solvers.scalebio import checkpoint
from solvers.scalebio.config import ScaleBiOConfig
from solvers.scalebio.engine import Batch, Engine
from solvers.scalebio.lisa import Lisa
from solvers.scalebio.loop import BatchSampler, ScaleBiOResult, enable_checkpointing, fit, lora_spec
from solvers.scalebio.step import NonFiniteLossError, SolverState, model_pair, new_logits, set_lr


def init(backend: str | None = None) -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed once (env from torchrun); returns (rank, world size).

    ``backend``: NCCL when this rank's device is a GPU, else gloo. Without torchrun's environment it starts a
    one-process group on localhost.
    """
    import deepspeed

    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29511")):
        os.environ.setdefault(key, value)
    device = _local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend or ("nccl" if device.type == "cuda" else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def is_writer() -> bool:
    """True on the rank that writes files (rank 0), and outside a process group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def shutdown() -> None:
    """Wait for every rank, then tear the process group down (call once at the end of a rank's work, so no rank
    exits while another still talks to it)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def zero_stage_of(user: Mapping[str, Any] | None, zero_stage: int | None = None) -> int:
    """The ZeRO stage to run: ``zero_stage`` when given (``--zero``), else the user config's
    ``zero_optimization.stage``, else 2, so a user config alone can choose the stage."""
    if zero_stage is not None:
        return zero_stage
    zero = (user or {}).get("zero_optimization") or {}
    stage = zero.get("stage", 2) if isinstance(zero, Mapping) else 2
    if isinstance(stage, bool) or not isinstance(stage, int):
        raise ValueError(f"'zero_optimization.stage' must be an integer 0..3, got {stage!r}")
    return stage


def engine_config(user: Mapping[str, Any] | None, *, micro_batch: int, world: int, grad_clip: float | None,
                  clip_scale: float = 1.0, zero_stage: int | None = None, hidden: int | None = None) -> dict[str, Any]:
    """DeepSpeed's config for one engine: a copy of the user's config with the fields curate must own set on top.

    Kept from the user: everything else (``zero_optimization`` offload and bucket settings, ``bf16``, ...).
    Set by curate: the batch sizes (from ``micro_batch`` and ``world``), ``gradient_clipping`` (``grad_clip``
    times ``clip_scale``: 1 for u, α for w), and the flags that let its torch AdamW in (curate owns the optimizer
    and its schedule). The ZeRO stage is :func:`zero_stage_of`. A user may repeat a batch or clipping field only
    with curate's value (for clipping: ``grad_clip``) or ``"auto"``; ``optimizer``/``scheduler`` are refused.
    Under ZeRO-3 with the model's ``hidden`` size, the bucket and gathering sizes the user leaves unset are
    :func:`zero3_defaults` (DeepSpeed's own defaults are sized for billions of parameters).

    Raises:
        ValueError: naming the user's key and the fix.
    """
    owned: dict[str, tuple[Any, str]] = {  # key: (curate's value, the curate key that sets it)
        "train_micro_batch_size_per_gpu": (micro_batch, f"batch_size (split over {world} ranks)"),
        "gradient_accumulation_steps": (1, "batch_size (one step per global batch)"),
        "train_batch_size": (micro_batch * world, f"batch_size (rounded up to {world} ranks)"),
        "gradient_clipping": (grad_clip, "grad_clip (w clips at alpha * grad_clip)")}
    config = copy.deepcopy(dict(user or {}))
    _check_user_config(config, owned)
    zero = config.get("zero_optimization") or {}
    if not isinstance(zero, Mapping):
        raise ValueError(f"'zero_optimization' must be a mapping, got {zero!r}")
    zero = config["zero_optimization"] = {**zero, "stage": zero_stage_of(config, zero_stage)}
    if zero["stage"] == 3 and hidden:
        for key, value in zero3_defaults(hidden).items():
            if key not in zero and key.removeprefix("stage3_") not in zero:  # DeepSpeed takes either spelling
                zero[key] = value
    config.update({k: v for k, (v, _) in owned.items()})
    if grad_clip is None:
        del config["gradient_clipping"]
    else:
        config["gradient_clipping"] = grad_clip * clip_scale
    # curate passes its own torch AdamW: DeepSpeed refuses it without these (with offload it asks for CPUAdam)
    config.update({"zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False})
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


def zero3_defaults(hidden: int) -> dict[str, int]:
    """ZeRO-3 sizes for a model of hidden size ``hidden``: the bucket, prefetch and persistence sizes Hugging
    Face's Trainer fills in for ``"auto"`` (hidden², 0.9·hidden², 10·hidden elements), and a reuse distance of
    hidden² elements.

    DeepSpeed's defaults (5e8-element reduce bucket, 5e7 prefetch, 1e9 reuse distance) exceed a small model:
    each engine's gradient bucket then fills with all its gradients and stays resident, and every parameter
    gathered in the forward stays gathered until the backward, so a rank holds whole u and w again during the
    step (measured, 42M-param Llama with LISA, 2 CPU ranks, glibc's mmap threshold fixed so that RSS is live
    memory: peak 1,633 -> 1,379 MiB per rank).
    """
    square = hidden * hidden
    return {"reduce_bucket_size": square, "stage3_prefetch_bucket_size": int(0.9 * square),
            "stage3_param_persistence_threshold": 10 * hidden, "stage3_max_reuse_distance": square}


def hidden_size(module: nn.Module) -> int | None:
    """A model's hidden size: its Hugging Face ``config.hidden_size``, else the largest smaller side of its 2-D
    weights (ZeRO-3 parameters by their full shape); None without either."""
    size = getattr(getattr(module, "config", None), "hidden_size", None)
    if isinstance(size, int) and size > 0:
        return size
    shapes = [getattr(p, "ds_shape", p.shape) for p in module.parameters()]
    return max((min(s) for s in shapes if len(s) == 2), default=None)


_REFUSED = {"optimizer": "curate trains u and w with its own AdamW; remove the block and set lr_model and "
                         "weight_decay instead",
            "scheduler": "curate owns the learning-rate schedule; remove the block and set schedule and "
                         "warmup_ratio instead"}


def _check_user_config(config: Mapping[str, Any], owned: Mapping[str, tuple[Any, str]]) -> None:
    """Refuse what would silently fight curate: its optimizer and schedule, other batch sizes, other clipping,
    and Hugging Face Trainer ``"auto"`` placeholders that DeepSpeed alone cannot fill."""
    for key, why in _REFUSED.items():
        if key in config:
            raise ValueError(f"{key!r}: {why}")
    for key, (value, source) in owned.items():
        got = config.get(key, "auto")
        if got != "auto" and got != value:
            raise ValueError(f"{key!r} is {got!r} but curate sets {value!r} from {source}; remove the key (or "
                             f"make it \"auto\") and set {source.split()[0]} in curate's config instead")
    for path in _auto_keys(config):
        if path not in owned:
            raise ValueError(f"{path!r} is \"auto\", which only Hugging Face's Trainer fills in; set a value or "
                             "remove the key")


def _auto_keys(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            found += _auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            found.append(f"{prefix}{key}")
    return found


def _local_device() -> torch.device:
    """This rank's accelerator (``cuda:LOCAL_RANK``), or the CPU under ``DS_ACCELERATOR=cpu``."""
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    if accel.device_name() == "cpu":
        return torch.device("cpu")
    return torch.device(accel.device_name(int(os.environ.get("LOCAL_RANK", "0"))))


class DeepSpeedEngine(Engine):
    """The ranks of a torchrun job, u and w as DeepSpeed ZeRO engines (see the module docstring)."""

    def __init__(self, zero_stage: int | None = None, ds_config: Mapping[str, Any] | None = None) -> None:
        self.stage = zero_stage_of(ds_config, zero_stage)
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0..3, got {self.stage}")
        self.user = ds_config
        self.rank, self.world = init()
        self.device = _local_device()
        self.modules: list[nn.Module] = []  # u's and w's modules
        self.engines: list[Any] = [None, None]  # their engines, once built
        self.groups: list[list[list[str]]] = [[], []]  # per model: its optimizer's groups, as parameter names
        self.alpha = 0.0
        self._pending: dict[int, torch.Tensor] = {}

    # -- reductions and the step ------------------------------------------------------------------------------
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduced on this rank's device (NCCL reduces CUDA tensors only), returned where ``t`` lives."""
        out = t.detach().to(self.device, copy=True)
        dist.all_reduce(out)
        return out.to(t.device)

    def sum_grad_(self, t: torch.Tensor) -> None:
        dist.all_reduce(t)  # λ's gradient lives on the models' device

    def shard(self, batch: Batch) -> Batch:
        return {k: v[self.rank::self.world] if isinstance(v, torch.Tensor) and v.dim() else v
                for k, v in batch.items()}

    def zero_grad(self, model: nn.Module) -> None:
        """Nothing: DeepSpeed zeroes the gradients in its step."""

    def backward(self, model: nn.Module, loss: torch.Tensor, final: bool = True) -> None:
        """One ``engine.backward`` per engine and step: earlier losses are held and added to the final one."""
        held = self._pending.pop(id(model), None)
        if not final:
            self._pending[id(model)] = loss if held is None else held + loss
            return
        model.backward(loss if held is None else held + loss)  # type: ignore[operator]

    def update(self, items: Any, lr: float, step: int) -> list[float]:
        """Step each engine at ``lr`` (DeepSpeed clips inside); returns their pre-clip global norms.

        Raises:
            NonFiniteLossError: a norm is NaN/inf (after the step; see the module docstring).
        """
        norms = []
        for engine, _, _ in items:
            set_lr(engine.optimizer, lr)
            engine.step()
            norm = engine.get_global_grad_norm()
            norms.append(math.nan if norm is None else float(norm))
            if norm is not None and not math.isfinite(float(norm)):
                raise NonFiniteLossError(step, "gradient", updated=True)
        return norms

    # -- building and rebuilding u and w --------------------------------------------------------------------
    def init_state(self, model: nn.Module, n_sources: int, cfg: ScaleBiOConfig, consume: bool) -> SolverState:
        self.cfg, self.alpha = cfg, cfg.alpha
        self.modules = list(model_pair(model, lora_spec(cfg), consume))
        if cfg.gradient_checkpointing:
            enable_checkpointing(*self.modules)
        u_mod, w_mod = self.modules
        logits = new_logits(n_sources, model)
        opt_lambda = torch.optim.AdamW([logits], lr=cfg.lr_lambda, weight_decay=cfg.lambda_weight_decay)
        if cfg.lisa:  # the engines are built at the first draw, over its active blocks only
            return SolverState(u_mod, w_mod, logits, None, None, opt_lambda)  # type: ignore[arg-type]
        u, w = self.engines = [self._build(i, [self._trainable(i)]) for i in (0, 1)]
        return SolverState(u, w, logits, u.optimizer, w.optimizer, opt_lambda)

    def make_lisa(self, state: SolverState, cfg: ScaleBiOConfig) -> Lisa | None:
        if not cfg.lisa:
            return None
        return Lisa(self.modules, cfg.lisa_layers, cfg.lisa_period, cfg.seed, cfg.lisa_release_state)

    def new_stage(self, state: SolverState, alpha: float) -> None:
        """Rebuild u and w: w's clipping follows α, and the moments start afresh as on one process."""
        self.alpha = alpha
        state.opt_lambda.state.clear()
        self._replace(state, [[self._trainable(i)] for i in (0, 1)], carry=False)

    def redraw(self, lisa: Lisa, state: SolverState, step: int) -> None:
        """Draw new blocks and rebuild u and w over them, carrying the moments of what keeps training."""
        lisa.redraw()
        self._replace(state, None, carry=True)

    def _trainable(self, i: int) -> list[str]:
        return [n for n, p in self.modules[i].named_parameters() if p.requires_grad]

    def _replace(self, state: SolverState, groups: list[list[list[str]]] | None, carry: bool) -> None:
        """Tear down u's and w's engines (if built) and build them over what trains now, one model at a time and
        dropping every reference to the old engine first, so old and new buffers are never alive together. With
        ``carry``, the AdamW state of every parameter that trained before and still trains moves to the new
        engine."""
        for i in (0, 1):
            old, kept = self.engines[i], {}
            if old is not None:
                if carry:
                    kept = self._moments(i, old, set(self._trainable(i)))
                self.engines[i] = None
                self._hand_over(state, i, None)
                _release(old)
                del old
                if self.stage < 3:  # stop viewing the old engine's flat buffers (ZeRO-3: done in _release)
                    for p in self.modules[i].parameters():
                        p.data = p.data.clone()
                gc.collect()
            if groups is not None:
                model_groups = groups[i]
            else:  # by step count, oldest first, so each group's bias correction is its parameters'
                ages = sorted({age for age, _, _ in kept.values()} | {0}, reverse=True)
                model_groups = [[n for n in self._trainable(i) if kept.get(n, (0,))[0] == age] for age in ages]
                model_groups = [g for g in model_groups if g]
            self.engines[i] = self._build(i, model_groups, kept)
            del kept
            self._hand_over(state, i, self.engines[i])

    def _hand_over(self, state: SolverState, i: int, engine: Any) -> None:
        """Make ``engine`` (None: the bare module) model i of ``state``, with its optimizer."""
        model = self.modules[i] if engine is None else engine
        opt = None if engine is None else engine.optimizer
        if i == 0:
            state.u, state.opt_u = model, opt
        else:
            state.w, state.opt_w = model, opt

    def _moments(self, i: int, engine: Any, still: set[str]) -> dict[str, tuple[int, torch.Tensor, torch.Tensor]]:
        """AdamW moments (on the host) and step count of each of model i's parameters in ``still`` (empty if the
        engine has not stepped since it was built): full (gathered) at ZeRO-1/2, whose partitions follow the flat
        groups; under ZeRO-3 this rank's partition of each, which is the same in every engine."""
        get = _moment_api(engine.zero_optimization_partition_weights())[0]
        inner = _inner(engine)
        if not inner.state:
            return {}
        _link(engine)
        steps = {g: int(inner.state[flat]["step"]) for g, flat in flat_partitions(engine)}
        params = dict(self.modules[i].named_parameters())
        out = {}
        for g, names in enumerate(self.groups[i]):
            for name in names:
                if name in still:
                    p = params[name]
                    out[name] = (steps[g], get(p, "exp_avg").to("cpu", copy=True),
                                 get(p, "exp_avg_sq").to("cpu", copy=True))
        return out

    def _build(self, i: int, groups: list[list[str]],
               kept: Mapping[str, tuple[int, torch.Tensor, torch.Tensor]] | None = None) -> Any:
        import deepspeed

        cfg = self.cfg
        params = dict(self.modules[i].named_parameters())
        optimizer = torch.optim.AdamW([{"params": [params[n] for n in g]} for g in groups], lr=cfg.lr_model,
                                      weight_decay=cfg.weight_decay)
        config = engine_config(self.user, micro_batch=math.ceil(cfg.batch_size / self.world), world=self.world,
                               grad_clip=cfg.grad_clip, clip_scale=1.0 if i == 0 else self.alpha,
                               zero_stage=self.stage, hidden=hidden_size(self.modules[i]))
        engine, _, _, _ = deepspeed.initialize(model=self.modules[i], optimizer=optimizer, config=config)
        self.groups[i] = [list(g) for g in groups]
        if kept:
            _set_moments(engine, groups, params, kept)
        return engine

    # -- checkpoints ----------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], payload: dict[str, Any], state: SolverState) -> None:
        """Every rank writes its engines' shards (DeepSpeed's format), then rank 0 commits ``scalebio.pt``."""
        root, tag = Path(directory), f"step{payload['step']}"
        for name, engine in (("u", state.u), ("w", state.w)):
            engine.save_checkpoint(str(root / "deepspeed" / name), tag=tag, save_latest=False)
        dist.barrier()
        if self.writer:
            checkpoint.save(root, {**payload, "deepspeed": {"tag": tag, "groups": self.groups,
                                                            "alpha": self.alpha}})
            for name in ("u", "w"):
                for old in (root / "deepspeed" / name).iterdir():
                    if old.name != tag:
                        shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def load(self, directory: str | os.PathLike[str], state: SolverState, lisa: Lisa | None,
             check: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        ck = checkpoint.load(directory)
        check(ck)
        meta = ck.get("deepspeed")
        if meta is None:
            raise ValueError(f"{checkpoint.path(directory)} was written by a single-process run; resume it "
                             "without the DeepSpeed launcher")
        if lisa is not None:
            lisa.load_state_dict(ck["lisa"])
        self.alpha = float(meta["alpha"])
        self._replace(state, meta["groups"], carry=False)
        root = Path(directory) / "deepspeed"
        for name, engine in (("u", state.u), ("w", state.w)):
            path, _ = engine.load_checkpoint(str(root / name), tag=meta["tag"], load_optimizer_states=True,
                                             load_lr_scheduler_states=False)
            if path is None:
                raise FileNotFoundError(f"no DeepSpeed checkpoint {meta['tag']} in {root / name}")
        return ck


def _release(engine: Any) -> None:
    """Destroy an engine and remove the hooks it left on its module: ``destroy()`` keeps them (DeepSpeed 0.19),
    and through their closures every rebuilt engine, buffers and all, would stay alive (measured: one more per
    LISA draw). Under ZeRO-3 the module stays partitioned (see :func:`_unhook_zero3`)."""
    zero3 = engine.zero_optimization_partition_weights()
    if zero3:
        engine.empty_partition_cache()  # every parameter back to its partition, persistent ones included
    engine.destroy()
    for name in ("module_forward_pre_hook", "module_forward_post_hook", "first_dataloader_check"):
        handle = getattr(engine, name, None)
        if handle is not None:
            handle.remove()
            setattr(engine, name, None)
    if zero3:
        _unhook_zero3(engine.module)


def _unhook_zero3(module: nn.Module) -> None:
    """Leave a ZeRO-3 module partitioned but free of its destroyed engine, so the next engine takes it over as a
    ``zero.Init`` model (DeepSpeed converts only parameters that are not ZeRO parameters yet).

    ``destroy()`` removes the engine's module and gradient hooks but keeps, per submodule, the autograd functions
    of its backward hooks (``pre_bwd_fn``/``post_bwd_fn``, closures over the old parameter coordinator, which a
    new engine would reuse rather than replace), the module on DeepSpeed's forward stack, and on every parameter
    a link to the old optimizer; and the partitions it trained view its flat buffer, which they would keep alive
    once they stop training. Each parameter keeps its partition (``ds_tensor``) and ZeRO attributes."""
    from deepspeed.runtime.zero import parameter_offload

    for m in module.modules():
        for key in ("pre_bwd_fn", "post_bwd_fn"):
            m.__dict__.pop(key, None)
    stack = parameter_offload.FWD_MODULE_STACK
    for k in range(len(stack) - 1, -1, -1):
        if stack[k] is module:
            del stack[k]
            break
    for p in module.parameters():
        if hasattr(p, "_z3_optimizer"):
            del p._z3_optimizer
        part = getattr(p, "ds_tensor", None)
        if part is not None and part.untyped_storage().nbytes() > part.numel() * part.element_size():
            part.data = part.data.clone()


def _inner(engine: Any) -> torch.optim.Optimizer:
    """The torch AdamW inside an engine's ZeRO optimizer (the engine's own optimizer at stage 0)."""
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def flat_partitions(engine: Any) -> list[tuple[int, torch.Tensor]]:
    """This rank's flat fp32 partitions (the tensors its AdamW steps, keys of its state), each with the index of
    its parameter group. ZeRO-3 splits a group into sub-groups and puts them into the group only while stepping."""
    opt = engine.optimizer
    if hasattr(opt, "fp32_partitioned_groups_flat"):
        return [(opt.sub_group_to_group_id[s], flat) for s, flat in enumerate(opt.fp32_partitioned_groups_flat)]
    return [(g, flat) for g, group in enumerate(_inner(engine).param_groups) for flat in group["params"]]


def _link(engine: Any) -> None:
    """Point every parameter's tensor fragment at its slice of the flat AdamW moments. ZeRO-1/2 do this only after
    their first step and not after ``load_checkpoint`` (DeepSpeed 0.19), while the fragment API needs it."""
    opt = engine.optimizer
    if hasattr(opt, "_lazy_init_hp_params_optimizer_state"):
        opt._hp_optimizer_states_linked = False
        opt._lazy_init_hp_params_optimizer_state()


def _set_moments(engine: Any, groups: list[list[str]], params: Mapping[str, nn.Parameter],
                 kept: Mapping[str, tuple[int, torch.Tensor, torch.Tensor]]) -> None:
    """Give a fresh engine the carried AdamW state: each group's step count and its parameters' moments (zero
    for parameters that just joined), laid out as torch's AdamW would have created them."""
    put = _moment_api(engine.zero_optimization_partition_weights())[1]
    inner = _inner(engine)
    if len(groups) != len(inner.param_groups):
        raise RuntimeError(f"{len(groups)} parameter groups, but the engine's AdamW has {len(inner.param_groups)}")
    for g, flat in flat_partitions(engine):
        age = kept[groups[g][0]][0] if groups[g][0] in kept else 0
        inner.state[flat] = {"step": torch.tensor(float(age)), "exp_avg": torch.zeros_like(flat),
                             "exp_avg_sq": torch.zeros_like(flat)}
    _link(engine)
    for name, (_, exp_avg, exp_avg_sq) in kept.items():
        put(params[name], exp_avg, "exp_avg")
        put(params[name], exp_avg_sq, "exp_avg_sq")


def _moment_api(zero3: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """DeepSpeed's getter and setter of one parameter's optimizer state: this rank's partition under ZeRO-3
    (no gather; a parameter's partition does not depend on the groups), the full tensor at ZeRO-1/2."""
    from deepspeed import utils

    if zero3:
        return utils.safe_get_local_optimizer_state, utils.safe_set_local_optimizer_state
    return utils.safe_get_full_optimizer_state, utils.safe_set_full_optimizer_state


def check_supported(cfg: ScaleBiOConfig, stage: int) -> None:
    """Refuse what the engine cannot run at ZeRO ``stage`` (see the module docstring).

    Raises:
        ValueError: naming the setting and the fix.
    """
    for bad, what in ((cfg.lisa and stage == 0, "LISA under ZeRO-0 (use --zero 2)"),
                      (cfg.lisa and not cfg.lisa_release_state, "lisa_release_state=False"),
                      (cfg.lower_level == "lora" and stage == 3, "lower_level='lora' under ZeRO-3 (use --zero 2)")):
        if bad:
            raise ValueError(f"the DeepSpeed engine does not support {what}")


def fit_distributed(model: nn.Module, train: BatchSampler, val: BatchSampler, cfg: ScaleBiOConfig, *,
                    zero_stage: int | None = None, ds_config: Mapping[str, Any] | None = None,
                    on_step: Callable[[dict[str, float]], None] | None = None,
                    checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
                    consume: bool = False) -> ScaleBiOResult:
    """:func:`solvers.scalebio.fit` across the ranks of a torchrun job (call it on every rank, same arguments).

    Returns the same result on every rank (weights, averaged weights, trajectory of global-batch statistics);
    ``model`` of the result is w's engine (under ZeRO-3 its parameters are partitioned across ranks).
    ``ds_config`` is the user's DeepSpeed config (offload, buckets, ...), merged by :func:`engine_config`;
    ``zero_stage`` overrides its ``zero_optimization.stage`` (default: that stage, else 2). ``model`` is moved
    to this rank's device first; ``consume`` lets u train it in place (one model copy fewer per rank), as in
    :func:`solvers.scalebio.fit`.

    Raises:
        ValueError: an unsupported combination (LoRA under ZeRO-3, LISA at stage 0, LISA without state
            release), a ``ds_config`` key curate owns, or a global batch smaller than the world.
        NonFiniteLossError: a global loss or gradient became NaN/inf.
        KeyboardInterrupt: after the checkpoint of the last completed step (every rank stops at the same step).
    """
    engine = DeepSpeedEngine(zero_stage, ds_config)
    check_supported(cfg, engine.stage)
    if min(cfg.batch_size, cfg.val_batch_size) < engine.world:
        raise ValueError(f"batch_size and val_batch_size must be >= the {engine.world} ranks")
    return fit(model.to(_local_device()), train, val, cfg, on_step=on_step, checkpoint_dir=checkpoint_dir,
               resume=resume, consume=consume, engine=engine)
