"""Evaluate any reconstruction method y -> x_hat on (x, y) pairs with PROTOCOL.md's metrics.

Outputs are clamped to [0, 1] before PSNR (data range 1) and SSIM (Gaussian window 11, sigma 1.5),
both averaged over images; the spread is the std over images. Evaluation noise comes from the
dataset (``DegradedDataset(..., seed=...)``), so two evaluations see identical measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from jfb.metrics import psnr, ssim

Method = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """Per-image metrics of one method on one dataset, plus cost."""

    method: str
    psnr: torch.Tensor
    ssim: torch.Tensor
    seconds: float
    iterations: torch.Tensor | None = None
    examples: list[torch.Tensor] = field(default_factory=list)

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
            "n_images": self.n_images,
            "infer_ms_per_image": round(1000.0 * self.seconds / max(self.n_images, 1), 3),
        }
        out["mean_solver_iters"] = (
            None if self.iterations is None else round(float(self.iterations.float().mean()), 2)
        )
        return out


def evaluate(
    method: Method,
    pairs: Dataset | Iterable,
    *,
    name: str = "model",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    keep: int = 0,
) -> EvalResult:
    """Run ``method`` on every (x, y) pair; ``keep`` first reconstructions are returned too.

    ``method`` may be an ``nn.Module`` (put in eval mode, run without gradients; its
    ``last_stats`` give per-image solver iterations) or any callable y -> x_hat.
    """
    device = torch.device(device)
    loader = (
        pairs
        if isinstance(pairs, DataLoader)
        else DataLoader(pairs, batch_size=batch_size, shuffle=False)
    )
    if isinstance(method, torch.nn.Module):
        method.eval()
    psnrs, ssims, iters, examples = [], [], [], []
    seconds = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            _sync(device)
            start = time.perf_counter()
            x_hat = method(y)
            _sync(device)
            seconds += time.perf_counter() - start
            x_hat = x_hat.clamp(0.0, 1.0)
            psnrs.append(psnr(x_hat, x).cpu())
            ssims.append(ssim(x_hat, x).cpu())
            stats = getattr(method, "last_stats", None)
            if stats is not None:
                iters.append(stats.iterations.cpu())
            for img in x_hat[: max(0, keep - len(examples))]:
                examples.append(img.cpu())
    if not psnrs:
        raise ValueError("the evaluation set is empty")
    return EvalResult(
        method=name,
        psnr=torch.cat(psnrs).double(),
        ssim=torch.cat(ssims).double(),
        seconds=seconds,
        iterations=torch.cat(iters) if iters else None,
        examples=examples,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
