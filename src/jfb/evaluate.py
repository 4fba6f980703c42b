"""Evaluate any reconstruction method y -> x_hat on (x, y) pairs with PROTOCOL.md's metrics.

Outputs are clamped to [0, 1] before PSNR (data range 1) and SSIM (Gaussian window 11, sigma 1.5),
both averaged over images; the spread is the std over images. More metrics (:mod:`jfb.quality`:
MS-SSIM, VIF, HaarPSI, GMSD, FSIM, LPIPS, DISTS) are scored on the same clamped outputs when
asked for; their time is not counted in the method's. Evaluation noise comes from the
dataset (``DegradedDataset(..., seed=...)``), so two evaluations see identical measurements.
With ``contraction=True`` an implicit model's local contraction factor ||J_T(x*)||_2 is measured
at every reconstruction (power iteration, seeded) and summarised as mean and max over images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from jfb.device import synchronize
from jfb.metrics import psnr, ssim

if TYPE_CHECKING:
    from jfb.progress import ProgressBar
    from jfb.quality import Metric

#: y -> x_hat, or y -> (x_hat, stats) with the solve's statistics (``stats.iterations``).
Method = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, Any]"]


@dataclass
class EvalResult:
    """Per-image metrics of one method on one dataset, plus cost."""

    method: str
    psnr: torch.Tensor
    ssim: torch.Tensor
    seconds: float
    iterations: torch.Tensor | None = None
    examples: list[torch.Tensor] = field(default_factory=list)
    contraction: torch.Tensor | None = None  # ||J_T(x*)||_2 per image, when measured
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # more metrics, per image

    @property
    def n_images(self) -> int:
        return int(self.psnr.numel())

    def summary(self) -> dict[str, Any]:
        """The row of a results table: means, stds over images, cost per image."""
        out: dict[str, Any] = {
            "method": self.method,
            "psnr": round(float(self.psnr.mean()), 4),
            "psnr_std": round(float(self.psnr.std(unbiased=False)), 4),
            "ssim": round(float(self.ssim.mean()), 5),
            "ssim_std": round(float(self.ssim.std(unbiased=False)), 5),
        }
        for name, values in self.scores.items():
            out[name] = round(float(values.mean()), 5)
            out[f"{name}_std"] = round(float(values.std(unbiased=False)), 5)
        out |= {
            "n_images": self.n_images,
            "infer_ms_per_image": round(1000.0 * self.seconds / max(self.n_images, 1), 3),
        }
        out["mean_solver_iters"] = (
            None if self.iterations is None else round(float(self.iterations.float().mean()), 2)
        )
        if self.contraction is not None:
            out["contraction_mean"] = round(float(self.contraction.mean()), 4)
            out["contraction_max"] = round(float(self.contraction.max()), 4)
        return out


def evaluate(
    method: Method,
    pairs: Dataset | Iterable,
    *,
    name: str = "model",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    keep: int = 0,
    contraction: bool = False,
    contraction_iters: int = 10,
    progress: ProgressBar | None = None,
    metrics: Sequence[Metric] = (),
) -> EvalResult:
    """Run ``method`` on every (x, y) pair; ``keep`` first reconstructions are returned too.

    ``method`` may be an ``nn.Module`` (put in eval mode, run without gradients; its
    ``last_stats`` give per-image solver iterations) or any callable y -> x_hat, or y -> (x_hat,
    stats) with the stats of its solve (``model.solve(y, physics)``: the iterations counted
    without reading the model's state).
    ``contraction=True`` (implicit models only: a ``contraction(x*, y)`` method) also measures
    ||J_T(x*)||_2 per image with ``contraction_iters`` power iterations from a seeded start;
    this time is not counted in ``seconds``. ``progress`` (a :func:`jfb.progress.progress_bar`)
    advances by the images of each batch and shows the mean PSNR so far. ``metrics``
    (:func:`jfb.quality.parse_metrics`) are scored too, into ``scores``; PSNR and SSIM always
    are, into their own fields.
    """
    if contraction and not callable(getattr(method, "contraction", None)):
        raise ValueError(
            f"contraction=True needs an implicit model (with a contraction(x*, y) method), "
            f"got {type(method).__name__}"
        )
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0) if contraction else None
    loader = (
        pairs
        if isinstance(pairs, DataLoader)
        else DataLoader(pairs, batch_size=batch_size, shuffle=False)
    )
    if isinstance(method, torch.nn.Module):
        method.eval()
    extra = [m for m in metrics if m.name not in ("psnr", "ssim")]
    scores: dict[str, list[torch.Tensor]] = {m.name: [] for m in extra}
    psnrs, ssims, iters, examples, factors = [], [], [], [], []
    seconds = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            synchronize(device)
            start = time.perf_counter()
            x_hat = method(y)
            synchronize(device)
            seconds += time.perf_counter() - start
            x_hat, stats = x_hat if isinstance(x_hat, tuple) else (
                x_hat, getattr(method, "last_stats", None))
            if contraction:
                factors.append(method.contraction(x_hat, y, n_iter=contraction_iters,
                                                  generator=gen).cpu())
            x_hat = x_hat.clamp(0.0, 1.0)
            psnrs.append(psnr(x_hat, x).cpu())
            ssims.append(ssim(x_hat, x).cpu())
            for m in extra:
                scores[m.name].append(m(x_hat, x).cpu())
            if stats is not None:
                iters.append(stats.iterations.cpu())
            for img in x_hat[: max(0, keep - len(examples))]:
                examples.append(img.cpu())
            if progress is not None:
                progress.update(int(x.shape[0]), psnr=float(torch.cat(psnrs).mean()))
    if not psnrs:
        raise ValueError("the evaluation set is empty")
    return EvalResult(
        method=name,
        psnr=torch.cat(psnrs).double(),
        ssim=torch.cat(ssims).double(),
        seconds=seconds,
        iterations=torch.cat(iters) if iters else None,
        examples=examples,
        contraction=torch.cat(factors).double() if factors else None,
        scores={name: torch.cat(v).double() for name, v in scores.items()},
    )
