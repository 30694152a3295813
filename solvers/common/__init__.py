"""The torch-free floor of the project: pieces every package shares and the base install can import.

``curate``, ``baselines``, ``evals`` and ``solvers`` all use these, so they live below all of them and import
nothing but the standard library and numpy (a test checks that ``import solvers.common`` leaves torch unloaded):

- :mod:`solvers.common.io`: the one atomic writer (``write_json``, ``atomic_path``, ``atomic_dir``, ...);
- :func:`normalise`: weights onto the simplex, with an explicit policy for an all-zero vector;
- :func:`top_k`: the one deterministic best-first ordering of per-example scores;
- :data:`StepCallback`: the per-step record every iterative method hands its caller.
"""

from solvers.common.callbacks import StepCallback
from solvers.common.ranking import top_k
from solvers.common.weights import WhenZero, normalise

__all__ = ["StepCallback", "WhenZero", "normalise", "top_k"]
