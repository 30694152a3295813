"""ScaleBiOConfig validation and the step-size schedule (ALGORITHMS.md §5.3)."""

from __future__ import annotations

import math

import pytest

from solvers.scalebio import ScaleBiOConfig, schedule


@pytest.mark.parametrize(("field", "value"), [
    ("alpha", 0.0), ("alpha", math.nan), ("lr_model", -1e-3), ("lr_lambda", 0.0), ("steps", 0),
    ("steps", 2.5),
    ("batch_size", 0), ("val_batch_size", -1), ("tau", 0.5), ("stages", 0), ("sampling", "uniform"),
    ("schedule", "linear"), ("warmup_ratio", 1.0), ("grad_clip", 0.0), ("weight_decay", -1.0),
    ("lisa_layers", 0), ("lisa_period", 0), ("checkpoint_every", -1), ("average_from", 1.5),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ScaleBiOConfig.{field}"):
        ScaleBiOConfig(**{field: value})


def test_more_stages_than_steps_is_rejected():
    with pytest.raises(ValueError, match="stages"):
        ScaleBiOConfig(steps=2, stages=3)


def test_defaults_are_valid_and_frozen():
    cfg = ScaleBiOConfig()
    assert cfg.alpha == 10 and cfg.tau == 1 and cfg.stages == 1 and cfg.sampling == "stratified"
    with pytest.raises(AttributeError):
        cfg.alpha = 1.0  # type: ignore[misc]


def test_cosine_schedule_with_warmup():
    cfg = ScaleBiOConfig(steps=100, warmup_ratio=0.1)
    assert schedule.lr_scale(0, cfg) == 0.0
    assert schedule.lr_scale(5, cfg) == pytest.approx(0.5)
    assert schedule.lr_scale(10, cfg) == pytest.approx(1.0)
    assert schedule.lr_scale(55, cfg) == pytest.approx(0.5)
    assert schedule.lr_scale(99, cfg) < 0.01
    assert ScaleBiOConfig(schedule="constant").steps > 0
    assert schedule.lr_scale(250, ScaleBiOConfig(schedule="constant")) == 1.0


def test_alpha_stages_scale_alpha_up_and_steps_down():
    cfg = ScaleBiOConfig(steps=10, alpha=10.0, tau=2.0, stages=3, schedule="constant")
    assert [schedule.stage(t, cfg) for t in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert [schedule.alpha(t, cfg) for t in (0, 3, 9)] == [10.0, 20.0, 40.0]
    assert [schedule.lr_scale(t, cfg) for t in (0, 3, 9)] == [1.0, 0.5, 0.25]
