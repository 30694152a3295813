"""`--launcher deepspeed` for LESS, checked before any work: the ranks run no DeepSpeed engine, so --zero and
--deepspeed-config are refused for it, --resume is not; a method that cannot run on ranks is named with those
that can. (The runs themselves: test_less_distributed.py.)"""

from __future__ import annotations

import pytest

from curate import methods
from curate.errors import ConfigError
from curate.launch import Launch, Rank, plan_launch, rank_device


def plan(method: str, **kw: object) -> Launch:
    args = dict(resume=False, ingest=False, zero=None, nproc=2, ds_config_path=None) | kw
    entry = methods.get(method)
    return plan_launch("deepspeed", method=entry, cfg=entry.config_class()(), **args)  # type: ignore[arg-type]


def test_less_runs_on_ranks_without_an_engine(tmp_path):
    launch = plan("less")
    assert launch.distributed and launch.zero_stage is None and launch.nproc == 2
    assert plan("less", resume=True).distributed  # each rank stores its own chunks: a killed run resumes
    for kw, flag in (({"zero": 2}, "--zero"), ({"ds_config_path": tmp_path / "ds.json"}, "--deepspeed-config")):
        with pytest.raises(ConfigError, match=f"^{flag}: less runs no DeepSpeed engine"):
            plan("less", **kw)
    with pytest.raises(ConfigError, match="--nproc"):
        plan("less", nproc=0)
    with pytest.raises(ConfigError, match="ingest the data files first"):
        plan("less", ingest=True)


def test_other_methods_are_refused_naming_those_that_run_on_ranks():
    with pytest.raises(ConfigError, match=r"runs --method less or scalebio only, not rho$"):
        plan("rho")


def test_a_plain_cuda_device_is_the_ranks_own_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("cuda", Rank(rank=1, world=2, local=1, in_job=True)) == "cuda:1"
    assert rank_device("cuda:0", Rank(rank=1, world=2, local=1, in_job=True)) == "cuda:0"
    assert rank_device("cuda", Rank()) == "cuda"
    assert rank_device("cpu", Rank(rank=1, world=2, local=1, in_job=True)) == "cpu"
