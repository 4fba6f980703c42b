"""Forward models for imaging inverse problems: linear operators with exact adjoints, kernels,
noise. Imports nothing of the project except :mod:`jfb.errors`."""

from jfb.physics import kernels
from jfb.physics.base import Identity, LinearOperator
from jfb.physics.blur import BatchBlur, Blur
from jfb.physics.downsample import Downsample
from jfb.physics.mask import BoxMask, Mask, MaskOperator, RandomMask
from jfb.physics.measurement import Physics, as_physics, stack_blurs, stack_physics
from jfb.physics.noise import GaussianNoise, estimate_noise_std, quantisation_step

__all__ = [
    "BatchBlur",
    "Blur",
    "BoxMask",
    "Downsample",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "Mask",
    "MaskOperator",
    "Physics",
    "as_physics",
    "RandomMask",
    "estimate_noise_std",
    "kernels",
    "quantisation_step",
    "stack_blurs",
    "stack_physics",
]
