"""CPU threads that degrade gracefully when other work shares the machine.

torch's OpenMP threads spin-wait for each other at the end of every parallel region; when another process holds
one of the cores, every op waits for a thread that is not running, and a 2-core run beside one busy process was
3x slower than alone (``benchmarks/bench_threads.py``). Two defaults fix that without slowing an idle machine:
libgomp spins only briefly before sleeping (``GOMP_SPINCOUNT``, set before torch loads), and a command that trains
uses no more threads than there are cores idle at its start (sampled from ``/proc/stat``). A user's own
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


def free_cores(window_s: float = 0.3) -> int:
    """Cores this process may use that are idle right now (at least 1): the share of idle time over a short
    window of ``/proc/stat``, times the cores. The load average would be simpler but lags a minute behind, so it
    still counts a job that just finished; without ``/proc`` (not Linux) it is the fallback."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    idle = _idle_share(window_s)
    if idle is None:
        try:
            return max(1, cores - int(os.getloadavg()[0] + 0.5))
        except OSError:
            return cores
    return max(1, min(cores, int(idle * (os.cpu_count() or cores) + 0.5)))


def _idle_share(window_s: float) -> float | None:
    """Share of all CPU time spent idle (idle + iowait) over ``window_s`` seconds, or None without /proc/stat."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields[3:5]), sum(fields[:8])  # (idle + iowait, everything but guest time)

    first = sample()
    time.sleep(window_s)
    second = sample()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


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
