"""The ScaleBiO loop as a stateful program: resume, interrupts, LISA, determinism, non-finite losses."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from solvers.data import SourceSampler
from solvers.lm import per_example_loss, tiny_llama
from solvers.scalebio import NonFiniteLossError, ScaleBiOConfig, fit, make_samplers
from solvers.scalebio import checkpoint as ckpt
from solvers.scalebio.lisa import Lisa
from solvers.scalebio.simplex import weights
from solvers.scalebio.step import init_state, scalebio_step
from tests.solvers.conftest import small_sets

SOURCES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def sets(arithmetic_tokenizer, arithmetic_rows):
    return small_sets(arithmetic_tokenizer, arithmetic_rows, SOURCES)


def new_model(sets):
    model = tiny_llama(300, hidden=16, layers=4, heads=2, max_len=32, seed=0)
    for layer in model.model.layers:  # dropout makes the run depend on torch's RNG, which resume must restore
        layer.self_attn.attention_dropout = 0.1
    return model


def config(**overrides):
    base = dict(steps=10, batch_size=6, val_batch_size=4, lr_lambda=0.1, lisa=True, lisa_layers=2,
                lisa_period=3, checkpoint_every=0, seed=3, sampling="proportional")
    return ScaleBiOConfig(**{**base, **overrides})


def run(sets, cfg, **kwargs):
    return fit(new_model(sets), *make_samplers(*sets, cfg), cfg, **kwargs)


def stop_at(step, exc=KeyboardInterrupt):
    def on_step(row):
        if row["step"] == step:
            raise exc()
    return on_step


def assert_same_run(a, b):
    for s in SOURCES:
        assert a.weights[s] == pytest.approx(b.weights[s], abs=1e-6)
    assert len(a.trajectory) == len(b.trajectory)
    for ra, rb in zip(a.trajectory, b.trajectory, strict=True):
        assert ra["target_loss"] == pytest.approx(rb["target_loss"], abs=1e-6)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert float((pa - pb).detach().abs().max()) <= 1e-6


@pytest.fixture(scope="module")
def reference(sets):
    return run(sets, config())


def test_keyboard_interrupt_saves_and_resume_matches_uninterrupted(sets, reference, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(sets, config(), checkpoint_dir=tmp_path, on_step=stop_at(5))
    assert sorted(os.listdir(tmp_path)) == [ckpt.FILENAME]  # written atomically: no temp file left
    assert ckpt.load(tmp_path)["step"] == 6
    assert_same_run(run(sets, config(), checkpoint_dir=tmp_path, resume=True), reference)


def test_crash_resumes_from_the_last_periodic_checkpoint(sets, reference, tmp_path):
    with pytest.raises(RuntimeError):
        run(sets, config(checkpoint_every=4), checkpoint_dir=tmp_path, on_step=stop_at(6, RuntimeError))
    assert ckpt.load(tmp_path)["step"] == 4
    assert_same_run(run(sets, config(checkpoint_every=4), checkpoint_dir=tmp_path, resume=True), reference)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler for the test, restored afterwards.

    A shell starts a background job (``&``, ``nohup``) with SIGINT ignored, and Python then installs no handler
    of its own, so what ``fit`` defers and what raises KeyboardInterrupt would depend on how pytest was started.
    """
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:  # None: a handler not installed from Python; SIG_DFL is what such a process started with
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)


def test_sigint_finishes_the_step_then_saves(sets, reference, tmp_path, python_sigint_handler):
    def on_step(row):
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run(sets, config(), checkpoint_dir=tmp_path, on_step=on_step)
    assert ckpt.load(tmp_path)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert_same_run(run(sets, config(), checkpoint_dir=tmp_path, resume=True), reference)


def test_a_forwarded_second_sigint_is_the_same_ctrl_c_but_a_later_one_aborts(sets, tmp_path,
                                                                              python_sigint_handler, monkeypatch):
    """Under torchrun a rank gets the terminal's SIGINT and the launcher's copy a moment later: within
    SIGINT_ECHO_S they are one Ctrl-C (finish the step, save); a second press after it aborts at once."""
    from solvers.scalebio import loop

    after_both: list[int] = []

    def twice(row):
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            after_both.append(row["step"])  # not reached when the second one aborts at once

    with pytest.raises(KeyboardInterrupt):
        run(sets, config(), checkpoint_dir=tmp_path / "echo", on_step=twice)
    assert after_both == [2] and ckpt.load(tmp_path / "echo")["step"] == 3
    monkeypatch.setattr(loop, "SIGINT_ECHO_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        run(sets, config(), checkpoint_dir=tmp_path / "abort", on_step=twice)
    assert after_both == [2]


def test_resume_refuses_a_different_config(sets, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(sets, config(), checkpoint_dir=tmp_path, on_step=stop_at(1))
    with pytest.raises(ValueError, match="lr_lambda"):
        run(sets, config(lr_lambda=0.2), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError):
        run(sets, config(), checkpoint_dir=tmp_path / "empty", resume=True)


def test_same_seed_same_weights_and_the_seed_matters(sets, reference):
    again = run(sets, config())
    assert_same_run(again, reference)
    other = run(sets, config(seed=4))
    assert any(abs(other.weights[s] - reference.weights[s]) > 1e-6 for s in SOURCES)


def test_fit_leaves_the_input_model_alone(sets):
    model = new_model(sets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = config(steps=2)
    result = fit(model, *make_samplers(*sets, cfg), cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model is not model
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert set(result.averaged_weights) == set(SOURCES)
    assert {"p_a", "loss_u_b", "loss_w_c", "target_loss", "gap", "grad_norm_u", "grad_norm_w",
            "grad_norm_lambda", "tokens_per_s"} <= set(result.trajectory[0])


def test_consume_trains_the_input_model_as_u_with_the_same_result(sets, reference):
    model = new_model(sets)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = config()
    result = fit(model, *make_samplers(*sets, cfg), cfg, consume=True)
    assert_same_run(result, reference)  # the same weights, losses and final w
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))  # u moved it


def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(sets, reference, tmp_path):
    calls = {"n": 0}

    def poisoned(model, batch):  # two calls per step (u, w): calls 11 and later are step 5 onwards
        calls["n"] += 1
        loss = per_example_loss(model, batch)
        return loss * float("nan") if calls["n"] > 10 else loss

    with pytest.raises(NonFiniteLossError, match="step 5") as err:
        run(sets, config(checkpoint_every=2), checkpoint_dir=tmp_path, per_example_loss_fn=poisoned)
    assert err.value.step == 5
    saved = ckpt.load(tmp_path)
    assert saved["step"] == 4 and len(saved["trajectory"]) == 4
    p = weights(saved["logits"]).tolist()
    assert p == pytest.approx([reference.trajectory[4][f"p_{s}"] for s in SOURCES], abs=1e-7)


def test_samplers_must_match_the_config(sets):
    cfg = config()
    train, val = make_samplers(*sets, cfg)
    with pytest.raises(ValueError, match="batch_size"):
        fit(new_model(sets), SourceSampler(sets[0], 9, 0, "proportional"), val, cfg)
    with pytest.raises(ValueError, match="sampling"):
        fit(new_model(sets), SourceSampler(sets[0], 6, 0, "stratified"), val, cfg)
    with pytest.raises(ValueError, match="autocast_bf16"):
        fit(new_model(sets), train, val, config(autocast_bf16=True))


@pytest.mark.parametrize("release", [False, True], ids=["keep_state", "release_state"])
def test_lisa_trains_exactly_the_drawn_blocks_plus_embeddings_and_head(sets, release):
    train, val = sets
    state = init_state(new_model(sets), 3, 1e-2, 1e-2, 5e-4, 0.01)
    lisa = Lisa([state.u, state.w], n_active=2, period=2, seed=0, release_state=release)
    draws = []
    for t in range(6):
        lisa.maybe_redraw(t, [state.opt_u, state.opt_w])
        draws.append([list(a) for a in lisa.active])
        before = {m: {n: p.detach().clone() for n, p in model.named_parameters()}
                  for m, model in (("u", state.u), ("w", state.w))}
        scalebio_step(state, train.batch(range(6)), val.batch(range(4)), alpha=10.0, lr_model=1e-2,
                      lr_lambda=1e-2, n_sources=3)
        for (m, model), active, opt in zip((("u", state.u), ("w", state.w)), lisa.active,
                                           (state.opt_u, state.opt_w), strict=True):
            assert len(active) == 2
            for name, param in model.named_parameters():
                block = _block_index(name)
                changed = not torch.equal(before[m][name], param)
                if block is None or block in active:
                    assert param.requires_grad and changed, name  # embeddings, norm, head, active blocks
                else:
                    assert not param.requires_grad and param.grad is None and not changed, name
                    if release:
                        assert param not in opt.state
    assert any(u != w for u, w in draws)  # u and w draw independently


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if parts[:2] == ["model", "layers"] else None
