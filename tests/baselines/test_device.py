"""One device story for every method: with ``device=D``, every tensor LESS, RHO, DoReMi and ScaleBiO create lives on D.

Each method runs through the registry's fit (``curate.methods``: what ``curate reweight`` and ``compare`` call)
with the model on the CPU as the pipeline loads it, inside :class:`CreationRecorder`, a ``TorchFunctionMode`` that
records every tensor a factory call (``torch.zeros``, ``torch.tensor``, ``torch.randint``, ``*_like``, ...) made
from this project's code (``baselines/``, ``solvers/``, ``curate/``; torch's, transformers' and peft's own
tensors are theirs to place). Two rules:

1. every factory call in our code names its device (``device=``, or ``*_like``/``new_*``/``as_tensor`` of a
   tensor), so nothing silently defaults to the CPU: checked on the CPU too, where a defaulted tensor would
   otherwise be invisible;
2. every tensor lands on D. On CUDA the rule is for floating tensors, and host-side tensors our code names
   ``device="cpu"`` on purpose are exempt (batch collation, ScaleBiO's trajectory summary, LISA's draw).

``test_the_recorder_catches_*`` show the check can fail: a planted ``torch.zeros(3)`` is reported, and a named
tensor on the wrong device is too.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from baselines import DoremiConfig, LessConfig, RhoConfig
from baselines.scoring import subset
from solvers.lm import tiny_llama
from solvers.scalebio import ScaleBiOConfig

ROOT = Path(__file__).resolve().parents[2]
OURS = tuple(str(ROOT / d) + "/" for d in ("baselines", "solvers", "curate"))
TORCH = Path(torch.__file__).parent
_DISPATCH = {str(TORCH / "overrides.py"), str(TORCH / "utils" / "_device.py")}

NAMED = {torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.as_tensor, torch.asarray,
         torch.arange, torch.linspace, torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint,
         torch.randperm, torch.empty_strided, torch.scalar_tensor, torch.from_numpy}
"""Factories that take their device from ``device=`` (else the default device: the CPU)."""
DERIVED = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
           torch.randint_like, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full,
           torch.Tensor.new_empty, torch.Tensor.new_tensor}
"""Factories that take their device from a tensor."""


@dataclass(frozen=True)
class Created:
    """One tensor a factory call in our code made."""

    site: str
    """``path:line`` of the call, relative to the repository."""
    func: str
    device: torch.device
    floating: bool
    named: bool
    """The call said where: ``device=``, or a tensor it derives from."""
    host: bool
    """``device=`` named the CPU on purpose."""


class CreationRecorder(TorchFunctionMode):
    """Records :class:`Created` for every factory call made from a file under ``roots``."""

    def __init__(self, roots: tuple[str, ...] = OURS) -> None:
        super().__init__()
        self.roots, self.created = roots, []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (func in NAMED or func in DERIVED) and isinstance(out, torch.Tensor):
            site = _site(self.roots)
            if site is not None:
                self.created.append(_created(func, args, kwargs, out, site))
        return out


_SKIP: set[CodeType] = {CreationRecorder.__torch_function__.__code__}


def _site(roots: tuple[str, ...]) -> str | None:
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code in _SKIP or frame.f_code.co_filename in _DISPATCH):
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(roots):
        return None
    return f"{Path(frame.f_code.co_filename).relative_to(ROOT)}:{frame.f_lineno}"


def _created(func: Any, args: tuple, kwargs: dict, out: torch.Tensor, site: str) -> Created:
    given = kwargs.get("device")
    from_tensor = func in DERIVED or (func in (torch.as_tensor, torch.asarray) and args
                                      and isinstance(args[0], torch.Tensor))
    host = given is not None and torch.device(given).type == "cpu"
    return Created(site, getattr(func, "__name__", str(func)), out.device, out.is_floating_point(),
                   given is not None or bool(from_tensor), host)


def _on(actual: torch.device, expected: torch.device) -> bool:
    return actual.type == expected.type and (expected.index is None or actual.index == expected.index)


def strays(created: list[Created], expected: torch.device, *, gpu_rule: bool = False) -> list[str]:
    """What breaks rule 1 or 2 (module docstring), one line each; ``gpu_rule``: rule 2 as on CUDA."""
    out = []
    for c in created:
        if not c.named:
            out.append(f"{c.site}: {c.func} without device= (landed on {c.device})")
        elif not _on(c.device, expected) and not (gpu_rule and (c.host or not c.floating)):
            out.append(f"{c.site}: {c.func} on {c.device}, expected {expected}")
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------------------
# The methods, tiny: a few steps each on a slice of the planted corpus

PER_SOURCE, TARGET_ROWS = 12, 16
CONFIGS: dict[str, Any] = {
    "less": LessConfig(warmup_epochs=2, warmup_min_rows=8, warmup_batch_size=8, lr=1e-3, grad_batch_size=8,
                       proj_dim=64, proj_chunk_rows=128, feature_buffer_mb=0.01, select_fraction=0.25),
    "rho": RhoConfig(reference_steps=2, reference_batch_size=8, batch_size=16, reference_fraction=0.5,
                     select_fraction=0.25),
    "rho_topk": RhoConfig(reference_steps=2, reference_batch_size=8, batch_size=16, aggregate="token_topk",
                          source_weights="excess"),
    "doremi": DoremiConfig(reference_steps=2, proxy_steps=3, batch_size=12),
    "scalebio": ScaleBiOConfig(steps=3, batch_size=6, val_batch_size=6, checkpoint_every=0),
    "scalebio_lisa": ScaleBiOConfig(steps=3, batch_size=6, val_batch_size=6, checkpoint_every=0, lisa=True,
                                    lisa_layers=1, lisa_period=1),
    "scalebio_lora": ScaleBiOConfig(steps=3, batch_size=6, val_batch_size=6, checkpoint_every=0,
                                    lower_level="lora"),
}
OWN_MODULES = {"less": ("baselines/less.py", "baselines/projection.py"), "rho": ("solvers/data.py",),
               "doremi": ("baselines/doremi.py",), "scalebio": ("solvers/scalebio/",)}
"""Where each method's creations are seen, so a passing run is not a recorder that saw nothing (RHO's own code
creates no tensor: its scores are differences of losses; its batches are made in ``solvers/data.py``)."""


@pytest.fixture(scope="module")
def small(planted):
    """12 pool rows per source and 16 target rows of the planted corpus, and the counts that go with them."""
    rows = [i for s in range(len(planted.train.sources))
            for i in [j for j, sid in enumerate(planted.train.source_ids) if sid == s][:PER_SOURCE]]
    train, target = subset(planted.train, rows), subset(planted.target, range(TARGET_ROWS))
    counts = {name: int(n) for name, n in zip(train.sources, train.counts(), strict=True)}
    return train, target, counts, len(planted.tokenizer)


def fit_recorded(case: str, small, device: str, tmp_path: Path) -> tuple[Any, list[Created], torch.nn.Module]:
    """Run ``case`` through the registry's fit with ``device`` (the model built on the CPU, as the pipeline loads
    it); the result, what was created, and the model handed in."""
    from curate import methods
    from curate.corpus import Rows
    from curate.methods import FitInputs
    from curate.runs import RunFolder

    train, target, counts, vocab = small
    name = case.split("_")[0]
    cfg = CONFIGS[case]
    if device.startswith("cuda"):  # what curate's method_config sets for a GPU device
        cfg = dataclasses.replace(cfg, autocast_bf16=True)
    model = tiny_llama(vocab, hidden=32, layers=2, heads=2, max_len=64, seed=0)
    empty = Rows([], [], [], [])
    inputs = FitInputs(name, cfg, counts, empty, empty, RunFolder(tmp_path / "run"), device=device, model=model,
                       train=train, target_set=target)
    with CreationRecorder() as recorder:
        result = methods.get(name).fit_fn()(inputs)
    return result, recorder.created, model


@pytest.mark.parametrize("case", list(CONFIGS))
def test_every_tensor_a_method_creates_is_on_the_cpu_and_names_its_device(case, small, tmp_path):
    result, created, _ = fit_recorded(case, small, "cpu", tmp_path)
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-6)
    assert strays(created, torch.device("cpu")) == []
    own = OWN_MODULES[case.split("_")[0]]
    assert any(c.site.startswith(own) for c in created), sorted({c.site for c in created})


def test_the_recorder_catches_a_tensor_made_without_a_device():
    """A planted ``torch.zeros(3)`` is reported (rule 1) though it lands on the CPU like everything else here; a
    tensor that names the expected device is not."""
    with CreationRecorder(roots=(__file__,)) as recorder:
        torch.zeros(3)  # the planted stray
        torch.zeros(3, device="meta")
    found = strays(recorder.created, torch.device("meta"))
    assert len(found) == 1 and "test_device.py" in found[0] and "zeros without device=" in found[0], found


def test_the_recorder_catches_a_named_tensor_on_the_wrong_device(small, tmp_path):
    """Rule 2 sees every creation of a real run: against a device the run did not use, DoReMi's tensors (α, λ,
    π on the model's device) are all reported."""
    _, created, _ = fit_recorded("doremi", small, "cpu", tmp_path)
    found = strays(created, torch.device("meta"))
    assert any(line.startswith("baselines/doremi.py") and "expected meta" in line for line in found), found
    assert strays(created, torch.device("cpu")) == []


@pytest.mark.parametrize("method", ["less", "rho", "doremi"])
def test_bf16_autocast_off_cuda_is_refused_before_any_work(method, small, tmp_path):
    from curate.errors import ConfigError
    from curate.methods import FitInputs, get
    from curate.runs import RunFolder

    train, target, counts, vocab = small
    cfg = dataclasses.replace(CONFIGS[method], autocast_bf16=True)
    inputs = FitInputs(method, cfg, counts, None, None, RunFolder(tmp_path), device="cpu",  # type: ignore[arg-type]
                       model=tiny_llama(vocab, hidden=32, layers=1, heads=2, max_len=64), train=train,
                       target_set=target)
    with pytest.raises(ConfigError, match=f"^{method}: {method}: autocast_bf16 needs a CUDA model"):
        get(method).fit_fn()(inputs)


def test_curate_turns_bf16_on_for_every_model_method_on_a_gpu(monkeypatch):
    """``device=cuda`` sets each model-based method's ``autocast_bf16`` (not only ScaleBiO's); a CPU leaves it."""
    import curate.settings as settings_module
    from curate.settings import method_config, settings_from

    for method in ("less", "rho", "doremi", "scalebio"):
        assert method_config(settings_from({"method": method, "device": "cpu"})).autocast_bf16 is False
    monkeypatch.setattr(settings_module, "resolve_device", lambda device: "cuda")
    for method in ("less", "rho", "doremi", "scalebio"):
        assert method_config(settings_from({"method": method, "device": "cuda"})).autocast_bf16 is True


def test_less_per_example_gradients_compose_with_autocast(small):
    """vmap(grad(functional_call)) under bf16 autocast (on the CPU here; the CUDA path uses the same dispatch)
    gives fp32 gradients close to the fp32 ones, so LESS's features can run under autocast on a GPU."""
    from baselines.less import add_lora, lora_params, per_example_grads

    train, _, _, vocab = small
    wrapped = add_lora(tiny_llama(vocab, hidden=32, layers=2, heads=2, max_len=64), LessConfig(lora_r=4)).eval()
    params, batch = lora_params(wrapped), train.batch(list(range(4)))
    exact = per_example_grads(wrapped, params, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = per_example_grads(wrapped, params, batch)
    assert bf16.dtype == torch.float32 and bf16.shape == exact.shape
    assert torch.nn.functional.cosine_similarity(bf16, exact, dim=1).min() > 0.95


def test_baselines_run_leaves_a_model_elsewhere_untouched(small):
    """``baselines.run(device=...)`` copies a model that is not there yet, and uses one that is."""
    from baselines import on_device

    model = tiny_llama(small[3], hidden=32, layers=1, heads=2, max_len=64)
    assert on_device(model, torch.device("cpu")) is model
    moved = on_device(model, torch.device("meta"))
    assert moved is not model and next(model.parameters()).device.type == "cpu"
    assert next(moved.parameters()).device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", list(CONFIGS))
def test_every_floating_tensor_a_method_creates_is_on_cuda(case, small, tmp_path):
    """The same runs with ``device=cuda`` and bf16 autocast (as curate sets it on a GPU): every floating tensor
    our code creates is on the GPU, none defaults to the CPU, and the weights stay fp32."""
    result, created, model = fit_recorded(case, small, "cuda", tmp_path)
    assert strays(created, torch.device("cuda"), gpu_rule=True) == []
    assert created  # the recorder saw the run (at least its batches)
    param = next(model.parameters())
    assert param.device.type == "cuda"  # the loaded model moved there in place, as ScaleBiO's does
    assert param.dtype == torch.float32  # autocast, not a bf16 model
    assert all(w == w for w in result.weights.values())  # no NaN
