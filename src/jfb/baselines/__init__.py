"""Classical reconstructions with the true forward operator (no learning), plug-and-play with a
learned denoiser, and the tuning of their weights on validation data."""

from jfb.baselines.pnp import DenoiserWrapper, pnp_admm, pnp_pgd
from jfb.baselines.tikhonov import conjugate_gradient, gradient, gradient_adjoint, tikhonov
from jfb.baselines.tuning import TuneRow, log_grid, tune
from jfb.baselines.tv import total_variation, tv_objective, tv_reconstruct
from jfb.baselines.wiener import wiener

__all__ = [
    "DenoiserWrapper",
    "TuneRow",
    "conjugate_gradient",
    "gradient",
    "gradient_adjoint",
    "log_grid",
    "pnp_admm",
    "pnp_pgd",
    "tikhonov",
    "total_variation",
    "tune",
    "tv_objective",
    "tv_reconstruct",
    "wiener",
]
