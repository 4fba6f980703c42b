"""Initial estimates x0 of the image from the measurement y."""

from __future__ import annotations

import torch

from jfb.errors import check_choice
from jfb.linalg import tikhonov
from jfb.physics import LinearOperator

INITS = ("adjoint", "y", "tikhonov")

#: Tikhonov initialisation: weight of the gradient penalty and number of CG steps.
TIKHONOV_LAM = 1e-2
TIKHONOV_ITERS = 10


def initial_estimate(op: LinearOperator, y: torch.Tensor, init: str) -> torch.Tensor:
    """x0 = A^T y ("adjoint"), y itself ("y"), or 10 CG steps of
    argmin ||A x - y||^2 + 1e-2 ||grad x||^2 ("tikhonov")."""
    check_choice("init", init, INITS)
    if init == "adjoint":
        return op.A_adjoint(y)
    if init == "y":
        # The image has the shape of A^T y (computed on the meta device: no work, no memory).
        image_shape = tuple(op.A_adjoint(torch.empty(y.shape, device="meta", dtype=y.dtype)).shape)
        if image_shape != tuple(y.shape):
            raise ValueError(
                f"init='y' needs an operator that keeps the image size; {type(op).__name__} "
                f"measures {image_shape} images as {tuple(y.shape)}: use init='adjoint'"
            )
        return y
    with torch.no_grad():  # "tikhonov"
        return tikhonov(op, y, TIKHONOV_LAM, penalty="gradient", max_iter=TIKHONOV_ITERS)
