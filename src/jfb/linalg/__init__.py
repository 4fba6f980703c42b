"""Batched, per-sample linear algebra below the models and the baselines: conjugate gradients,
regularised least squares (Tikhonov, the ridge/ADMM x-update), finite differences, per-sample
inner products and weights, and the per-sample iteration loop of the classical solvers.

Imports nothing of the project but :mod:`jfb.errors`; operators are used through their methods.
"""

from jfb.linalg.batch import batch_dot, batch_view, batch_weight
from jfb.linalg.cg import conjugate_gradient
from jfb.linalg.differences import gradient, gradient_adjoint
from jfb.linalg.iterate import iterate_per_sample, relative_change
from jfb.linalg.least_squares import admm_x_update, tikhonov

__all__ = [
    "admm_x_update",
    "batch_dot",
    "batch_view",
    "batch_weight",
    "conjugate_gradient",
    "gradient",
    "gradient_adjoint",
    "iterate_per_sample",
    "relative_change",
    "tikhonov",
]
