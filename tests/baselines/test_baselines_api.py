"""The BASELINES registry and the uniform run() interface."""

import dataclasses
import math

import pytest
import torch

from baselines import (
    BASELINES,
    DoremiConfig,
    LessConfig,
    ProportionalConfig,
    RhoConfig,
    TemperatureConfig,
    UniformConfig,
    run,
)

TINY = {
    "less": LessConfig(warmup_epochs=1, warmup_min_rows=8, lora_r=2, proj_dim=32, select_fraction=0.1),
    "rho": RhoConfig(reference_steps=2),
    "doremi": DoremiConfig(reference_steps=2, proxy_steps=3, batch_size=10),
}


def _on_simplex(weights: dict[str, float], names: list[str]) -> None:
    assert list(weights) == names
    assert all(v >= 0 and math.isfinite(v) for v in weights.values())
    assert math.fsum(weights.values()) == pytest.approx(1.0, abs=1e-9)


def test_registry_names_and_configs():
    assert set(BASELINES) == {"uniform", "proportional", "temperature", "less", "rho", "doremi"}
    expected = {
        "uniform": UniformConfig,
        "proportional": ProportionalConfig,
        "temperature": TemperatureConfig,
        "less": LessConfig,
        "rho": RhoConfig,
        "doremi": DoremiConfig,
    }
    for name, method in BASELINES.items():
        assert method.name == name and method.config is expected[name]
        cfg = method.config()
        assert dataclasses.is_dataclass(cfg)
        for f in dataclasses.fields(cfg):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(cfg, f.name, getattr(cfg, f.name))


@pytest.mark.parametrize("name", ["less", "rho", "doremi"])
def test_model_based_results_on_simplex(results, planted, name):
    res = results[name]
    _on_simplex(res.weights, list(planted.counts))
    if BASELINES[name].level == "example":
        assert len(res.scores) == len(planted.train)
        assert set(res.selected) <= set(planted.train.example_ids)
    else:
        assert res.scores is None and len(res.trajectory) == 30


@pytest.mark.parametrize("name", ["uniform", "proportional", "temperature"])
def test_simple_results_on_simplex_in_counts_order(name):
    counts = {"z": 5, "a": 50, "m": 500}
    _on_simplex(run(name, counts=counts).weights, ["z", "a", "m"])


def test_keys_follow_counts_order_and_model_untouched(planted, base_model):
    """Weights are keyed in counts' order (not the pool's), and no method modifies the caller's model."""
    counts = dict(reversed(list(planted.counts.items())))
    before = {k: v.clone() for k, v in base_model.state_dict().items()}
    seen = []
    for name, cfg in TINY.items():
        res = run(
            name,
            cfg,
            counts=counts,
            model=base_model,
            train=planted.train,
            target=planted.target,
            on_step=seen.append,
        )
        _on_simplex(res.weights, list(counts))
    after = base_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    stages = {r["stage"] for r in seen}
    assert stages == {"less_warmup", "rho_reference", "doremi_reference", "doremi_proxy"}
    assert all(isinstance(r["step"], int) for r in seen)


def test_run_rejects_bad_calls(planted, base_model):
    inputs = dict(counts=planted.counts, model=base_model, train=planted.train, target=planted.target)
    with pytest.raises(ValueError, match="unknown baseline"):
        run("random", **inputs)
    with pytest.raises(ValueError, match="RhoConfig"):
        run("rho", LessConfig(), **inputs)
    with pytest.raises(ValueError, match="model"):
        run("less", counts=planted.counts, train=planted.train, target=planted.target)
    with pytest.raises(ValueError, match="target"):
        run("rho", counts=planted.counts, model=base_model, train=planted.train)
    with pytest.raises(ValueError, match="target"):
        run(
            "doremi",
            DoremiConfig(reference_data="target"),
            counts=planted.counts,
            model=base_model,
            train=planted.train,
        )
    wrong = {**planted.counts, "noise_000": 1}
    with pytest.raises(ValueError, match="noise_000"):
        run("rho", TINY["rho"], **{**inputs, "counts": wrong})
    with pytest.raises(ValueError, match="sources"):
        run("rho", TINY["rho"], **{**inputs, "counts": {"other": 200}})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("warmup_fraction", 0.0),
        ("warmup_epochs", 0),
        ("lr", -1e-3),
        ("lora_r", 0),
        ("proj_dim", 0),
        ("proj_chunk_rows", 2.5),
        ("select_fraction", 1.5),
        ("tasks", "all"),
        ("projector", "fast"),
        ("adam_betas", (0.9, 1.0)),
        ("lora_dropout", 1.0),
        ("warmup_ratio", -0.1),
        ("target_modules", ("",)),
        ("feature_buffer_mb", 0),
        ("grad_batch_size", True),
    ],
)
def test_less_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        LessConfig(**{field: value})
