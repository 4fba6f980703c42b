"""The context a tile needs, from the operator's kernel and the model: the margin of
:func:`jfb.restore.tile_margin`, max(48, 4/3 (g + 2 r + p)), with g the operator's reach, r the
reach of its ridge inverse (A^T A + rho I)^-1 A^T at the rho of the call, p the receptive
radius of the model's network (scripts/tile_reach.py measures how far a border reaches)."""

from __future__ import annotations

import math

import torch

from jfb.constants import CHANNELS
from jfb.physics import Blur, Physics
from jfb.restore import deconvolution_reach, operator_reach, tile_margin

__all__ = ["DEFAULT_RIDGE", "margin_for", "prior_reach", "ridge_weight"]

#: The ridge weight rho whose inverse sets a blur's margin for a model without one of its own
#: (the face model's learned rho is 0.027-0.030; a smaller rho reaches farther).
DEFAULT_RIDGE = 0.03

#: The receptive radius assumed for a network that is not local (global pooling).
NONLOCAL_PRIOR = 256


def ridge_weight(model: torch.nn.Module, physics: Physics) -> float:
    """The rho of a call under ``physics``: a DE-ADMM's, by its noise rule
    (:meth:`jfb.models.DEADMM.rho_of`, read only), else :data:`DEFAULT_RIDGE`."""
    rho = DEFAULT_RIDGE
    if callable(getattr(model, "rho_of", None)):
        rho = float(model.rho_of(physics, torch.zeros(1)).detach().min())
    return rho if math.isfinite(rho) and rho > 0 else DEFAULT_RIDGE  # NaN: no norm estimated


def prior_reach(model: torch.nn.Module) -> int:
    """The receptive radius of ``model``'s network (:func:`jfb.restore.operator_reach` of
    ``model.net``: 7 for a DnCNN of 7 3x3 layers); 0 without one."""
    net = getattr(model, "net", None)
    if not isinstance(net, torch.nn.Module):
        return 0
    device = next(iter(net.parameters()), torch.empty(0)).device
    try:
        return operator_reach(lambda x: net(x.to(device)).cpu(), channels=CHANNELS)
    except ValueError:
        return NONLOCAL_PRIOR


def margin_for(model: torch.nn.Module, physics: Physics, guard: int) -> int:
    """The margin a tile needs (:func:`jfb.restore.tile_margin`) for a call under ``physics``
    whose operator reaches ``guard`` pixels: for a blur, from the reach of its ridge inverse at
    :func:`ridge_weight` and the network's (:func:`prior_reach`); 48 or more otherwise."""
    if not isinstance(physics.op, Blur):
        return tile_margin(guard, 0)
    ridge = deconvolution_reach(physics.op.kernel, ridge_weight(model, physics))
    return tile_margin(guard, ridge, prior_reach(model))
