"""Thread defaults: a short OpenMP spin, set before torch loads, and the user's setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

from curate import threads


def test_the_cli_sets_a_short_spin_and_the_users_setting_wins(monkeypatch):
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == "123"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT


def test_the_entry_point_sets_it_before_torch_loads(tmp_path):
    code = ("import os, sys; from curate.cli import main; sys.argv = ['curate', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert res.stdout.strip().splitlines()[-1] == f"{threads.SPIN_COUNT} False"
