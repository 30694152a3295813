"""ScaleBiO: learn per-source data weights by first-order bilevel optimisation (arXiv 2406.19976).
 A library that takes plain data (a model, batch samplers, a config) and returns plain data (``dict[str,
float]`` weights, a trajectory, the trained model); it never imports ``curate``. See ALGORITHMS.md §1-§3 for
the maths.
"""

from solvers.scalebio.config import ScaleBiOConfig
from solvers.scalebio.loop import BatchSampler, Diagnostics, ScaleBiOResult, fit, make_samplers
from solvers.scalebio.step import NonFiniteLossError

__all__ = ["BatchSampler", "Diagnostics", "NonFiniteLossError", "ScaleBiOConfig", "ScaleBiOResult", "fit",
           "make_samplers"]
