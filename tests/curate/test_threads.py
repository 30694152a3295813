"""Thread defaults: fewer torch threads when cores are taken, never more, and the user's settings win."""

from __future__ import annotations

import os

import pytest
import torch

from curate import threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_free_cores_counts_the_idle_share(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_idle_share", lambda window_s: 0.74)  # three cores' worth of idle time
    assert threads.free_cores() == 3
    monkeypatch.setattr(threads, "_idle_share", lambda window_s: 0.01)
    assert threads.free_cores() == 1  # never 0
    monkeypatch.setattr(threads, "_idle_share", lambda window_s: None)  # no /proc/stat: the load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    assert threads.free_cores() == 3


def test_a_busy_core_is_seen(restore_threads):
    import subprocess
    import sys

    idle_now = threads._idle_share(0.3)
    assert idle_now is not None and 0.0 <= idle_now <= 1.0
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = threads._idle_share(0.5)
    finally:
        spinner.kill()
    n = os.cpu_count() or 1
    assert busy is not None and busy <= 1 - 0.5 / n  # one core's worth of time went to the spinner


def test_busy_cores_lower_the_threads_but_never_raise_them(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert threads.fit_threads_to_free_cores() == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(threads, "free_cores", lambda: 8)
    assert threads.fit_threads_to_free_cores() == 1  # an idle machine does not add threads torch did not choose


def test_the_users_settings_win(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert threads.fit_threads_to_free_cores() == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == "123"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
