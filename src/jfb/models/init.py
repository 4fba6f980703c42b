"""Initial estimates x0 of the image from the measurement y."""

from __future__ import annotations

import torch

from jfb.physics import LinearOperator

INITS = ("adjoint", "y", "tikhonov")

#: Tikhonov initialisation: weight of the gradient penalty and number of CG steps.
TIKHONOV_LAM = 1e-2
TIKHONOV_ITERS = 10


def initial_estimate(op: LinearOperator, y: torch.Tensor, init: str) -> torch.Tensor:
    """x0 = A^T y ("adjoint"), y itself ("y"), or 10 CG steps of
    argmin ||A x - y||^2 + 1e-2 ||grad x||^2 ("tikhonov")."""
    if init == "adjoint":
        return op.A_adjoint(y)
    if init == "y":
        x0 = y
        expected = op.out_shape(tuple(y.shape))
        if tuple(expected) != tuple(y.shape):
            raise ValueError(
                f"init='y' needs an operator that keeps the image size; {type(op).__name__} maps "
                f"{tuple(y.shape)} to {tuple(expected)}: use init='adjoint'"
            )
        return x0
    if init == "tikhonov":
        from jfb.baselines import tikhonov

        with torch.no_grad():
            return tikhonov(op, y, TIKHONOV_LAM, penalty="gradient", max_iter=TIKHONOV_ITERS)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")
