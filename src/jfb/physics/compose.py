"""Composition of forward operators: A = A_outer A_inner, with A^T = A_inner^T A_outer^T.

The typical use is a partially observed measurement: ``Composed(Mask(w), Blur(k))`` measures
y = w . (k * x), so the pixels with w = 0 carry no data term. A tile of a large image solved on
its own uses that form, with w = 0 on a frame as wide as the blur's reach, so the tile's data
term makes no assumption about the image outside the tile (see :mod:`jfb.restore`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from jfb.physics.base import LinearOperator
from jfb.physics.mask import MaskOperator

__all__ = ["Composed"]


class Composed(LinearOperator):
    """y = outer(inner(x)); A^T y = inner^T(outer^T(y)), so the adjoint is exact when both are."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        super().__init__()
        for name, op in (("outer", outer), ("inner", inner)):
            if not isinstance(op, LinearOperator):
                raise TypeError(f"{name} must be a LinearOperator, got {type(op).__name__}")
        self.outer = outer
        self.inner = inner

    def shared_across_batch(self) -> bool:
        """Shared when both factors are."""
        return self.outer.shared_across_batch() and self.inner.shared_across_batch()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = outer(inner(x))."""
        return self.outer.A(self.inner.A(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """x = inner^T(outer^T(y))."""
        return self.inner.A_adjoint(self.outer.A_adjoint(y))

    def ridge_preconditioner(
        self, rho: float | torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For a mask after an operator (a tile's window, or a blur seen through a mask): the
        inner operator's preconditioner, which ignores the mask. A^T M A differs from A^T A in
        the masked rows only (a tile's frame as wide as the blur's reach), and the inner
        preconditioner is symmetric positive definite whatever it approximates, so CG stays
        exact and its iterates close to the unmasked ones. None otherwise."""
        if isinstance(self.outer, MaskOperator):
            return self.inner.ridge_preconditioner(rho)
        return None
