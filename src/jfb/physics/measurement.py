"""The physics of a batch of measurements: y_i = A_i x_i + n_i, n_i ~ N(0, sigma_i^2 I).

A :class:`Physics` pairs a linear operator (the same for every sample, or one per sample as
:class:`~jfb.physics.BatchBlur`) with the noise std of each sample. Models take it with each
call, ``model(y, physics)`` in deepinv's convention, so one model serves any operator and any
noise level, and a training batch can mix them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from jfb.physics.base import LinearOperator
from jfb.physics.blur import BatchBlur, Blur

__all__ = ["Physics", "as_physics", "stack_blurs", "stack_physics"]


@dataclass(frozen=True)
class Physics:
    """y = A x + sigma n per sample.

    Args:
        op: the operator A (a :class:`~jfb.physics.LinearOperator`).
        noise_std: sigma per sample, a 1-D tensor (N,), a number for all samples, or None
            (unknown: a model then assumes the noise it was trained at).
    """

    op: LinearOperator
    noise_std: torch.Tensor | float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.op, LinearOperator):
            raise TypeError(f"Physics.op must be a jfb.physics.LinearOperator, got "
                            f"{type(self.op).__name__}")
        s = self.noise_std
        if s is None:
            return
        t = torch.as_tensor(s, dtype=torch.float32 if not isinstance(s, torch.Tensor) else None)
        if t.dim() > 1 or not t.is_floating_point():
            raise ValueError(f"Physics.noise_std must be a number or a 1-D float tensor, got "
                             f"{s!r}")
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError(f"Physics.noise_std must be finite and >= 0, got {s!r}")
        object.__setattr__(self, "noise_std", t)

    @classmethod
    def stack(cls, items: Sequence[Physics]) -> Physics:
        """One batch's physics from its samples' (:func:`stack_physics`)."""
        return stack_physics(items)

    def sigma(self, n: int, like: torch.Tensor) -> torch.Tensor | None:
        """sigma_i as an (n,) tensor on ``like``'s device and dtype (None if unknown)."""
        if self.noise_std is None:
            return None
        s = self.noise_std.to(device=like.device, dtype=like.dtype)
        return s.expand(n) if s.dim() == 0 else s

    def select(self, idx: torch.Tensor) -> Physics | None:
        """The physics of samples ``idx``; None when the operator cannot be restricted."""
        op = self.op.select(idx)
        if op is None:
            return None
        s = self.noise_std
        if s is not None and s.dim() == 1:
            s = s.index_select(0, idx.to(s.device))
        return Physics(op, s)

    def to(self, device: torch.device | str) -> Physics:
        """The same physics with the operator's buffers and the noise levels on ``device``."""
        s = None if self.noise_std is None else self.noise_std.to(device)
        return Physics(self.op.to(device), s)

    @torch.no_grad()
    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = A x + sigma_i n_i with n ~ N(0, I) drawn from ``generator`` (on its device, then
        moved), so a seeded generator gives the same y on every device."""
        y = self.op.A(x)
        sigma = self.sigma(y.shape[0], y)
        if sigma is None or not bool((sigma > 0).any()):
            return y
        device = generator.device if generator is not None else y.device
        n = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype).to(y.device)
        return y + sigma.view(-1, *([1] * (y.dim() - 1))) * n


def as_physics(physics: Physics | LinearOperator) -> Physics:
    """A :class:`Physics` from a physics or a bare operator (noise unknown)."""
    if isinstance(physics, Physics):
        return physics
    if isinstance(physics, LinearOperator):
        return Physics(physics)
    raise TypeError(f"physics must be a jfb.physics.Physics or LinearOperator, got "
                    f"{type(physics).__name__}")


def stack_blurs(kernels: Sequence[torch.Tensor], noise_std: Sequence[float] | torch.Tensor,
                padding: str = "circular") -> Physics:
    """One batch's physics from per-sample kernels (odd sides, padded to the largest) and noise
    stds: a :class:`~jfb.physics.BatchBlur` (a plain :class:`~jfb.physics.Blur` for one
    sample)."""
    sigma = torch.as_tensor(noise_std, dtype=torch.float32).reshape(-1)
    if len(kernels) != sigma.numel():
        raise ValueError(f"{len(kernels)} kernels but {sigma.numel()} noise levels")
    op: LinearOperator = BatchBlur(kernels, padding=padding)
    if len(kernels) == 1:
        op = Blur(op.kernel[0], padding=padding)
    return Physics(op, sigma)


def stack_physics(items: Sequence[Physics]) -> Physics:
    """One batch's physics from the physics of its samples, each a :class:`~jfb.physics.Blur`
    of one 2-D kernel with one noise level (what a dataset of random degradations yields)."""
    ops = [p.op for p in items]
    if not ops or not all(type(op) is Blur and op.kernel.dim() == 2 for op in ops):
        raise ValueError("stack_physics takes blurs of one 2-D kernel each")
    paddings = {op.padding for op in ops}
    if len(paddings) > 1:
        raise ValueError(f"cannot stack blurs of different paddings {sorted(paddings)}")
    sigmas = [p.noise_std for p in items]
    if any(s is None for s in sigmas):
        raise ValueError("stack_physics needs the noise level of every sample")
    op = BatchBlur([o.kernel for o in ops], padding=ops[0].padding)
    return Physics(op, torch.cat([s.reshape(-1) for s in sigmas]))  # type: ignore[union-attr]
