"""A user's DeepSpeed config (``--deepspeed-config``): merged under the fields curate owns, refused with one line
naming the file and key when it fights them. Nothing here starts a DeepSpeed process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import ConfigError
from curate.launch import check_deepspeed_config, read_deepspeed_config
from solvers.distributed import engine_config
from solvers.scalebio import ScaleBiOConfig

runner = CliRunner()
has_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

OFFLOAD = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                 "offload_param": {"device": "cpu", "pin_memory": False},
                                 "contiguous_gradients": False},
           "bf16": {"enabled": False}, "steps_per_print": 5, "train_batch_size": "auto",
           "gradient_clipping": "auto", "zero_allow_untested_optimizer": False}


def merged(user: dict | None, **kw) -> dict:
    return engine_config(user, **{"micro_batch": 3, "world": 2, "grad_clip": 1.0, **kw})


def test_user_settings_survive_and_curate_owned_fields_win():
    before = json.dumps(OFFLOAD, sort_keys=True)
    got = merged(OFFLOAD, clip_scale=10.0)
    assert got["zero_optimization"] == {**OFFLOAD["zero_optimization"], "stage": 3}  # the file chose stage 3
    assert got["bf16"] == {"enabled": False} and got["steps_per_print"] == 5
    assert (got["train_micro_batch_size_per_gpu"], got["train_batch_size"], got["gradient_accumulation_steps"]) == (
        3, 6, 1)
    assert got["gradient_clipping"] == 10.0  # w's engine: alpha * grad_clip
    assert got["zero_allow_untested_optimizer"] is True and got["zero_force_ds_cpu_optimizer"] is False
    assert json.dumps(OFFLOAD, sort_keys=True) == before  # the user's dict is not modified


def test_explicit_zero_stage_beats_the_file_and_defaults_hold_without_one():
    got = merged(OFFLOAD, zero_stage=2)
    assert got["zero_optimization"]["stage"] == 2 and got["zero_optimization"]["offload_optimizer"]
    plain = merged(None, grad_clip=None)
    assert plain["zero_optimization"] == {"stage": 2} and "gradient_clipping" not in plain
    assert merged({"train_batch_size": 6, "gradient_clipping": 1.0}, clip_scale=10.0)["gradient_clipping"] == 10.0


@pytest.mark.parametrize(("user", "key"), [
    ({"optimizer": {"type": "AdamW"}}, "'optimizer'"),
    ({"scheduler": {"type": "WarmupLR"}}, "'scheduler'"),
    ({"train_batch_size": 8}, "'train_batch_size'"),
    ({"train_micro_batch_size_per_gpu": 4}, "'train_micro_batch_size_per_gpu'"),
    ({"gradient_accumulation_steps": 2}, "'gradient_accumulation_steps'"),
    ({"gradient_clipping": 0.5}, "'gradient_clipping'"),
    ({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}, "'zero_optimization.reduce_bucket_size'"),
    ({"zero_optimization": [2]}, "'zero_optimization'"),
])
def test_conflicts_are_refused_naming_the_key(user, key):
    with pytest.raises(ValueError, match="^" + key.replace(".", r"\.")):
        merged(user)


def test_json_and_yaml_files_read_the_same(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps(OFFLOAD, indent="\t"))  # tabs: JSON, not YAML
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(OFFLOAD))
    assert read_deepspeed_config(tmp_path / "ds.json") == read_deepspeed_config(tmp_path / "ds.yaml") == OFFLOAD


def test_stage_comes_from_the_flag_then_the_file_then_two(tmp_path):
    cfg = ScaleBiOConfig(batch_size=6, val_batch_size=4)
    path = tmp_path / "ds.json"
    assert check_deepspeed_config(OFFLOAD, path, cfg, nproc=2, zero=None) == 3
    assert check_deepspeed_config(OFFLOAD, path, cfg, nproc=2, zero=2) == 2
    assert check_deepspeed_config(None, None, cfg, nproc=2, zero=None) == 2
    with pytest.raises(ConfigError, match=r"^--deepspeed-config: .*ds\.json: ZeRO stage 1 is not 2 or 3"):
        check_deepspeed_config({"zero_optimization": {"stage": 1}}, path, cfg, nproc=2, zero=None)


def reweight(tmp_path: Path, *args: str):
    return runner.invoke(app, ["reweight", "--launcher", "deepspeed", "--nproc", "2", "--db",
                               str(tmp_path / "none.duckdb"), *args])


def one_error_line(res, *expect: str) -> str:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    for text in expect:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "text", "expect"), [
    ("missing.json", None, "cannot be read"),
    ("bad.json", '{"zero_optimization": {"stage": 2,}}', "is not valid JSON"),
    ("bad.yaml", "zero_optimization: [1, 2\n", "is not valid YAML"),
    ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, monkeypatch, name, text, expect):
    monkeypatch.chdir(tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    if text is not None:
        (files / name).write_text(text)
    res = reweight(tmp_path, "--deepspeed-config", str(files / name))
    one_error_line(res, "--deepspeed-config", name, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]  # no database, no run folder


def test_the_file_needs_the_launcher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["reweight", "--deepspeed-config", "ds.json", "--db", str(tmp_path / "none.duckdb")])
    one_error_line(res, "--deepspeed-config: needs --launcher deepspeed")


@has_deepspeed
def test_a_conflicting_key_is_refused_before_any_rank_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("curate.launch.spawn", lambda *a: pytest.fail("a rank was started"))
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump({"train_batch_size": 32, "zero_optimization": {"stage": 2}}))
    line = one_error_line(reweight(tmp_path, "--deepspeed-config", "ds.yaml", "batch_size=6"),
                          "--deepspeed-config: ds.yaml:", "'train_batch_size' is 32 but curate sets 6")
    assert "remove the key" in line


@has_deepspeed
def test_a_good_file_reaches_the_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launched = []
    monkeypatch.setattr("curate.launch.spawn", lambda nproc, run_dir: launched.append(nproc) or 0)
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(OFFLOAD))
    res = reweight(tmp_path, "--deepspeed-config", "ds.yaml", "--zero", "2")
    assert res.exit_code == 0 and launched == [2], res.output
