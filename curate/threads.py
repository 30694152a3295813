"""CPU threads that degrade gracefully when other work shares the machine.

torch's OpenMP threads spin-wait for each other at the end of every parallel region; when another process holds
one of the cores, every op waits for a thread that is not running, and a 2-core run beside one busy process was
3.1x slower than alone (``benchmarks/bench_threads.py``). libgomp spinning only briefly before it sleeps
(``GOMP_SPINCOUNT``, set before torch loads) brings that to 1.9x and costs nothing on an idle machine.

The number of threads is left to torch (or ``OMP_NUM_THREADS``): it changes how CPU reductions are split and so the
last bits of every sum, and a trained model with them (RHO's weight on the demo's clean source: 0.694 with one
thread, 0.673 with two). Choosing it from the machine's load would make a seed's result depend on what else was
running; a fixed count keeps runs on one machine reproducible.
"""

from __future__ import annotations

import os

SPIN_COUNT = "1000"
"""libgomp's spins before a waiting thread sleeps (its default is 300,000): as fast as the default alone, and
1.9x rather than 3.1x slower beside a busy process on 2 cores (bench_threads.py)."""


def configure_openmp() -> None:
    """Set the OpenMP wait default unless the user chose one; call before anything imports torch (the CLI's entry
    point does)."""
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
