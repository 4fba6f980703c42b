"""Tikhonov-regularised least squares as a baseline: x = argmin ||A x - y||^2 + lam ||L x||^2.

The solver (CG on (A^T A + lam L^T L) x = A^T y, L = I or the forward-difference gradient) lives
in :mod:`jfb.linalg`, below the models (whose "tikhonov" initial estimate is the same solve) and
the baselines; this module keeps its names importable from here.
"""

from jfb.linalg.batch import batch_weight
from jfb.linalg.cg import conjugate_gradient
from jfb.linalg.differences import gradient, gradient_adjoint
from jfb.linalg.least_squares import PENALTIES, tikhonov

__all__ = ["PENALTIES", "batch_weight", "conjugate_gradient", "gradient", "gradient_adjoint",
           "tikhonov"]
