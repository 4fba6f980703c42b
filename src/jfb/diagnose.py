"""Whether a restoration can be trusted: the data misfit and the input's noise against the noise
the model assumes.

A model that explains its input leaves a misfit r = ||A x_hat - y|| / sqrt(n) about the noise
std sigma it assumes (0.88-0.90 sigma for the default model on built-in photos with its own
blur and noise, docs/RESULTS.md); quantisation adds step^2 / 12 to sigma^2. A wrong kernel (a
smaller one than the photo's blur, a motion blur, no blur at all) or noise well above sigma
shows as r well above sigma. A kernel larger than the model's does not: the model then fits the
data at noise level with a result that is still blurred, so the misfit cannot see it. The
input's own noise, estimated from the frequencies the blur stops
(:func:`jfb.physics.estimate_noise_std`), is compared with sigma directly; a JPEG's compression
error counts as noise in both (:func:`input_noise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from jfb.physics import Blur, Identity, LinearOperator, estimate_noise_std
from jfb.physics.noise import jpeg_noise_std

__all__ = ["MISFIT_RATIO", "NOISE_RATIO", "data_misfit", "input_noise", "noise_estimable",
           "trust_warnings", "unconverged_warning"]

#: r / sigma beyond this is not chance. The default model on three built-in photos
#: (scripts/trust_calibration.py): 0.88-0.90 measured as it assumes; 3.2-3.3 at noise 0.02;
#: 3.2-4.7 for a 9-pixel motion blur, 5.9-9.8 for a smaller Gaussian, 19 for no blur; a larger
#: Gaussian (9x9, sigma 3) 0.98-1.51, seen on one photo of three.
MISFIT_RATIO = 1.3
#: The input's estimated noise this many times above (or below) the assumed one is flagged.
NOISE_RATIO = 1.5


def noise_estimable(op: LinearOperator) -> bool:
    """Whether the noise of a measurement by ``op`` can be read from it: after a blur the finest
    details are gone and after denoising they are the noise, whereas a low-resolution, masked
    or tomographic measurement keeps image content there."""
    return isinstance(op, (Blur, Identity))


def input_noise(op: LinearOperator, y: torch.Tensor, step: float = 0.0,
                jpeg_quality: float | None = None) -> float:
    """The noise std of the measurement y (1, C, H, W) by ``op`` (:func:`noise_estimable`):
    :func:`jfb.physics.estimate_noise_std` through the blur's kernel, ``step`` (the file's
    quantisation step) taken out; for a JPEG of ``jpeg_quality``, the noise that stands for what
    the estimate reads and the compression error (:func:`jfb.physics.noise.jpeg_noise_std`)."""
    kernel = op.kernel if isinstance(op, Blur) else None
    sigma = float(estimate_noise_std(y, kernel, step)[0])
    if jpeg_quality is None:
        return sigma
    return jpeg_noise_std(sigma, jpeg_quality)


@torch.no_grad()
def data_misfit(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, *, border: int = 0,
                observed: torch.Tensor | None = None) -> float:
    """||A x - y|| / sqrt(n) over the measurement pixels at least ``border`` from its edges
    that are neither clipped (y at 0 or 1: saturation breaks y = A x + n) nor unobserved
    (``observed`` = 0); x and y are (1, C, H, W)."""
    r = op.A(x) - y
    keep = (y > 0) & (y < 1)
    if observed is not None:
        keep &= observed.bool().expand_as(keep)
    if border > 0 and min(y.shape[-2:]) > 2 * border:
        inner = torch.zeros_like(keep)
        inner[..., border:-border, border:-border] = True
        keep &= inner
    if not bool(keep.any()):
        return float("nan")
    return float(r[keep].square().mean().sqrt())


def unconverged_warning(solves: Sequence[Any]) -> str | None:
    """One line when a fixed-point solve (``solves``: their :class:`jfb.deq.SolverStats`, one
    per tile) stopped at its iteration cap with its residual above its tolerance: the result is
    then not the model's fixed point, only an iterate on the way. A wrong kernel often does
    this, and so can the right one on a hard image (docs/RESULTS.md "A wrong kernel": 10 of 24
    solves of 128-pixel crops with the right 9x9 Gaussian); None when every solve converged."""
    stuck = [s for s in solves if not bool(s.converged.all())]
    if not stuck:
        return None
    worst = max(float(s.residual.max()) for s in stuck)
    where = f" in {len(stuck)} of {len(solves)} tiles" if len(solves) > 1 else ""
    return (f"the solve stopped at its iteration cap ({stuck[0].max_iter}){where} with relative "
            f"residual {worst:.2g}, above its tolerance {stuck[0].tol:g}: the result is not the "
            "model's fixed point (a wrong --kernel often does this, and so can a hard image; "
            "--max-iter raises the cap)")


def trust_warnings(
    op: LinearOperator,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    step: float = 0.0,
    border: int = 0,
    observed: torch.Tensor | None = None,
    noise_told: bool = False,
    can_adapt: bool = True,
    jpeg_quality: float | None = None,
    solves: Sequence[Any] = (),
    seen: float | None = None,
) -> list[str]:
    """One-line warnings about the result x of y (both (1, C, H, W)) from a model that assumes
    noise std ``sigma`` (``step``: the file's quantisation step; ``border``: the operator's
    reach, left out of the misfit; ``jpeg_quality``: the file's, whose compression error counts
    as noise, :func:`input_noise`). ``noise_told``: sigma is what the user said or what was
    estimated; ``can_adapt``: the model can be told another noise level (DE-ADMM). ``solves``:
    the statistics (:class:`jfb.deq.SolverStats`) of the solves that made x (one per tile), of
    which any stopped by its iteration cap short of its tolerance is said
    (:func:`unconverged_warning`). ``seen``: the input's noise as :func:`input_noise` reads it,
    when the caller has it already (one FFT of the whole image fewer)."""
    said = [] if (line := unconverged_warning(solves)) is None else [line]
    expected = math.sqrt(sigma * sigma + step * step / 12)
    misfit = data_misfit(op, x, y, border=border, observed=observed)
    if expected > 0 and misfit > MISFIT_RATIO * expected:
        blur = (f"the {op.kernel_size[0]}x{op.kernel_size[1]} blur the model assumes"
                if isinstance(op, Blur) else "the forward model")
        said.append(
            f"the result does not explain the input: its data misfit ||Ax - y||/sqrt(n) = "
            f"{misfit:.3g} is {misfit / expected:.1f}x the noise the model assumes ({sigma:.3g}"
            f"{', with rounding ' + format(expected, '.3g') if step else ''}); check {blur} "
            "(--kernel) and the noise level (--noise auto)"
        )
    if noise_estimable(op):
        if seen is None:
            seen = input_noise(op, y, step, jpeg_quality)
        far = seen > NOISE_RATIO * sigma or seen < sigma / NOISE_RATIO
        if far and abs(seen - sigma) > step:
            if not can_adapt:
                hint = "this model cannot be told another level; a DE-ADMM model can"
            elif noise_told:
                hint = f"check --noise (or pass --noise auto, or --noise {seen:.2g})"
            else:
                hint = f"pass --noise auto (or --noise {seen:.2g})"
            said.append(f"the input's noise std looks like {seen:.3g}, the model assumes "
                        f"{sigma:.3g}: {hint}")
    return said
