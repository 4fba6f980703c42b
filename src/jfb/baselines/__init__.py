"""Classical reconstructions with the true forward operator (no learning)."""

from jfb.baselines.tikhonov import conjugate_gradient, gradient, gradient_adjoint, tikhonov

__all__ = ["conjugate_gradient", "gradient", "gradient_adjoint", "tikhonov"]
