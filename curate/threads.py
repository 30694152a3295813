"""CPU threads that degrade gracefully when other work shares the machine.

torch's OpenMP threads spin-wait for each other at the end of every parallel region; when another process holds
one of the cores, every op waits for a thread that is not running, and a 2-core run beside one busy process was
3x slower than alone (``benchmarks/bench_threads.py``). Two defaults fix that without slowing an idle machine:
libgomp spins only briefly before sleeping (``GOMP_SPINCOUNT``, set before torch loads), and a command that trains
uses no more threads than there are cores free at its start (the 1-minute load average). A user's own
``OMP_NUM_THREADS`` or ``GOMP_SPINCOUNT`` always wins.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

SPIN_COUNT = "1000"
"""libgomp's spins before a waiting thread sleeps (its default is 300,000): as fast as the default alone, and
1.9x rather than 3.1x slower beside a busy process on 2 cores (bench_threads.py)."""


def configure_openmp() -> None:
    """Set the OpenMP wait default; call before anything imports torch (the CLI's entry point does)."""
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def free_cores() -> int:
    """Cores this process may use that the load average says are not taken (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, cores - int(load + 0.5))


def fit_threads_to_free_cores() -> int:
    """Lower torch's intra-op threads to the free cores (never raise them, never override OMP_NUM_THREADS);
    returns the number in use."""
    import torch

    current = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return current
    wanted = min(current, free_cores())
    if wanted < current:
        log.info("%d of %d torch threads: the other cores are busy (set OMP_NUM_THREADS to choose)", wanted, current)
        torch.set_num_threads(wanted)
    return wanted
