"""Forward models for imaging inverse problems: linear operators with exact adjoints, kernels,
noise. Imports nothing of the project except :mod:`jfb.errors`."""

from jfb.physics import kernels
from jfb.physics.base import Identity, LinearOperator
from jfb.physics.blur import Blur
from jfb.physics.noise import GaussianNoise

__all__ = ["Blur", "GaussianNoise", "Identity", "LinearOperator", "kernels"]
