"""Forward models for imaging inverse problems: linear operators with exact adjoints, kernels,
noise. Imports nothing of the project except :mod:`jfb.errors`."""

from jfb.physics import kernels
from jfb.physics.base import Identity, LinearOperator
from jfb.physics.blur import Blur
from jfb.physics.downsample import Downsample
from jfb.physics.mask import BoxMask, Mask, MaskOperator, RandomMask
from jfb.physics.noise import GaussianNoise, estimate_noise_std, quantisation_step

__all__ = [
    "Blur",
    "BoxMask",
    "Downsample",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "Mask",
    "MaskOperator",
    "RandomMask",
    "estimate_noise_std",
    "kernels",
    "quantisation_step",
]
