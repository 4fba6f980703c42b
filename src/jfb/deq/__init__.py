"""The fixed-point engine: solvers, gradient strategies and statistics, knowing nothing of images.

x_star, stats = jfb.deq.fixed_point(f, x0, solver=Anderson(m=5), backward=JFB())
"""

from jfb.deq.backward import IFT, JFB, BackwardStrategy, Neumann, Unrolled
from jfb.deq.contraction import contraction_estimate
from jfb.deq.core import fixed_point
from jfb.deq.krylov import gmres
from jfb.deq.solvers import (
    Anderson,
    Broyden,
    Picard,
    Solver,
    SubsetMap,
    per_sample_norm,
    relative_residual,
)
from jfb.deq.stats import SolverStats

__all__ = [
    "IFT",
    "JFB",
    "Anderson",
    "Broyden",
    "BackwardStrategy",
    "Neumann",
    "Picard",
    "Solver",
    "SolverStats",
    "SubsetMap",
    "Unrolled",
    "contraction_estimate",
    "fixed_point",
    "gmres",
    "per_sample_norm",
    "relative_residual",
]
