"""Reconstructors built from physics + a learned net + (for implicit ones) the fixed-point engine.

Every model maps a measurement batch y to an image batch x_hat and keeps the statistics of its
last solve in ``model.last_stats`` (None for feedforward models).
"""

from jfb.models.build import build_backward, build_model, build_net_of, build_solver
from jfb.models.feedforward import Feedforward
from jfb.models.implicit import DEADMM, DEGrad, DEProx, ImplicitModel
from jfb.models.init import INITS, initial_estimate

__all__ = [
    "INITS",
    "DEADMM",
    "DEGrad",
    "DEProx",
    "Feedforward",
    "ImplicitModel",
    "build_backward",
    "build_model",
    "build_net_of",
    "build_solver",
    "initial_estimate",
]
