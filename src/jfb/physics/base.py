"""Abstract linear forward operator y = A x with its exact adjoint A^T.

Every operator is an ``nn.Module`` (so its buffers, e.g. a blur kernel, move with ``.to``) acting
on batches whose first dimension is the batch; sample i of A(x) depends only on sample i of x.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from jfb.errors import check_int, check_number, check_shape

__all__ = ["Identity", "LinearOperator"]


class LinearOperator(torch.nn.Module, ABC):
    """A linear map A with its adjoint A^T, so that <A x, y> = <x, A^T y> for all x, y.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`; ``forward(x) = A(x)`` and
    ``normal(x) = A^T A x`` follow. :meth:`out_shape` defaults to running A on a "meta" tensor
    (no memory, no compute); subclasses may override it with a closed form.
    """

    @abstractmethod
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the forward operator: y = A x."""

    @abstractmethod
    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator: x = A^T y."""

    #: A subclass whose A is the same for every sample sets this True (see
    #: :meth:`shared_across_batch`).
    SHARED_ACROSS_BATCH: ClassVar[bool] = False

    def shared_across_batch(self) -> bool:
        """Whether A is the same map for every sample of a batch (no per-sample data), so that
        A(x[idx]) = A(x)[idx] for any subset idx: a solver may then apply a model's T to the
        unfinished samples only. False unless a subclass says so, as an operator that holds data
        per sample must not."""
        return self.SHARED_ACROSS_BATCH

    def select(self, idx: torch.Tensor) -> LinearOperator | None:
        """The operator of the samples ``idx`` (a 1-D index tensor), so that
        A(x[idx]) = select(idx)(x[idx]) = A(x)[idx]: the operator itself when it is the same for
        every sample; None when it cannot say (per-sample data without a ``select`` of its
        own)."""
        return self if self.shared_across_batch() else None

    def selectable(self) -> bool:
        """Whether :meth:`select` can restrict this operator to some samples."""
        return self.shared_across_batch() or type(self).select is not LinearOperator.select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`A`."""
        return self.A(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the normal operator A^T A x (symmetric positive semi-definite)."""
        return self.A_adjoint(self.A(x))

    def ridge_preconditioner(
        self, rho: float | torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """v -> P v with P a symmetric positive definite approximation of (A^T A + rho I)^{-1}
        (rho > 0, a number or a 0-d tensor), cheap to apply to a batch of images of any size: the
        preconditioner of CG on the ridge (ADMM) normal equations. None (the default) when the
        operator has none."""
        return None

    def _default_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Device and floating dtype of the operator's first floating buffer/parameter, if any."""
        for t in list(self.buffers()) + list(self.parameters()):
            if t.is_floating_point():
                return t.device, t.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of A(x) for an input x of shape ``in_shape`` (batch dimension included)."""
        shape = check_shape(in_shape)
        _, dtype = self._default_device_dtype()
        return tuple(self.A(torch.empty(shape, device="meta", dtype=dtype)).shape)

    def image_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the images x that A measures as ``out_shape`` (that of A^T y), batch included.

        Defaults to running A^T on a "meta" tensor; operators whose measurement does not
        determine the image size raise ValueError.
        """
        shape = check_shape(out_shape)
        _, dtype = self._default_device_dtype()
        return tuple(self.A_adjoint(torch.empty(shape, device="meta", dtype=dtype)).shape)

    @torch.no_grad()
    def norm_estimate(
        self,
        in_shape: Sequence[int],
        *,
        n_iter: int = 100,
        tol: float = 1e-6,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> float:
        """Estimate ||A||_2, the largest singular value, by power iteration on A^T A.

        Iterates x <- A^T A x / ||A^T A x|| from a random unit x of shape ``in_shape`` (batch
        dimension included); the Rayleigh quotient lam = <x, A^T A x> = ||A x||^2 increases to the
        top eigenvalue of A^T A, and sqrt(lam) is returned. Stops after ``n_iter`` iterations or
        once lam changes by at most ``tol * lam``. The estimate approaches ||A||_2 from below, and
        slowly when the top singular values are clustered (as for blurs): raise ``n_iter`` and
        lower ``tol`` for high accuracy. ``device``/``dtype`` default to those of the operator's
        buffers (else CPU and the default dtype).
        """
        shape = check_shape(in_shape)
        check_int("n_iter", n_iter, minimum=1)
        check_number("tol", tol, low=0)
        dev0, dt0 = self._default_device_dtype()
        device = torch.device(device) if device is not None else dev0
        dtype = dtype if dtype is not None else dt0
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        gen_device = generator.device if generator is not None else device
        x = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
        x = x / torch.linalg.vector_norm(x)
        lam_prev = None
        lam = 0.0
        for _ in range(n_iter):
            z = self.normal(x)
            lam = float(torch.sum(x * z))
            z_norm = torch.linalg.vector_norm(z)
            if not torch.isfinite(z_norm):
                raise FloatingPointError("norm_estimate: A^T A x is not finite")
            if z_norm == 0:
                return 0.0
            x = z / z_norm
            if lam_prev is not None and abs(lam - lam_prev) <= tol * abs(lam):
                break
            lam_prev = lam
        return math.sqrt(max(lam, 0.0))


class Identity(LinearOperator):
    """The identity operator: A x = x, A^T y = y (returns its input itself, not a copy)."""

    SHARED_ACROSS_BATCH = True

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Return x."""
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Return y."""
        return y

    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape."""
        return check_shape(in_shape)

    def image_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """The measurement's shape."""
        return check_shape(out_shape)

    def ridge_preconditioner(
        self, rho: float | torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The exact (A^T A + rho I)^{-1} = I / (1 + rho)."""
        return lambda v: v / (1 + rho)
