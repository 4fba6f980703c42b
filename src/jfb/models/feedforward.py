"""Feedforward reconstructor x_hat = R(x0(y)), the non-implicit baseline with the same nets."""

from __future__ import annotations

import torch
from torch import nn

from jfb.errors import check_choice
from jfb.models.init import INITS, initial_estimate
from jfb.physics import LinearOperator, Physics, as_physics


class Feedforward(nn.Module):
    """x_hat = net(x0), x0 = A^T y, y or Tikhonov (``init``). BatchNorm is allowed here.

    With a residual net (``DnCNN(residual=True)``) this is the classic x0 - N(x0) deblurrer.
    ``last_stats`` is always None (there is no solve), so callers can treat every model alike.
    """

    def __init__(self, op: LinearOperator | None, net: nn.Module, *,
                 init: str = "adjoint") -> None:
        super().__init__()
        check_choice("init", init, INITS)
        self.op = op
        self.net = net
        self.init = init
        self.last_stats = None

    def forward(self, y: torch.Tensor,
                physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        """net(x0(y)) under ``physics`` (default: the model's operator)."""
        if y.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(y.shape)}")
        physics = as_physics(physics if physics is not None else self._default_op())
        sigma = physics.sigma(y.shape[0], y)
        return self.net(initial_estimate(physics.op, y, self.init, sigma))

    def solve(self, y: torch.Tensor, physics: Physics | LinearOperator | None = None,
              **budget: object) -> tuple[torch.Tensor, None]:
        """(x_hat, None): the same call as the implicit models' (no solve, no budget)."""
        return self(y, physics), None

    def _default_op(self) -> LinearOperator:
        if self.op is None:
            raise ValueError("Feedforward has no default operator: call it with the physics, "
                             "model(y, physics)")
        return self.op

    def feedforward(self, v: torch.Tensor) -> torch.Tensor:
        """The net alone on an image estimate v (pre-training it as a denoiser: v = x + noise)."""
        return self.net(v)

    def pretrain_forward(self, y: torch.Tensor,
                         physics: Physics | LinearOperator | None = None) -> torch.Tensor:
        return self(y, physics)
