"""What a fixed-point solve reports: per-sample iterations, residuals, convergence."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SolverStats:
    """Statistics of one batched fixed-point solve.

    Attributes:
        iterations: LongTensor[N], applications of T each sample received before it was frozen.
        residual: Tensor[N], last relative residual ||T(x)-x|| / (||T(x)|| + eps) of each sample.
        converged: BoolTensor[N], residual fell below the tolerance.
        nonfinite: BoolTensor[N], the iterate or residual became NaN/Inf (the sample was frozen).
        n_evals: number of batched calls of T (what the solve cost).
        tol: the tolerance the solve used.
        max_iter: the iteration budget the solve used.
        trace: Tensor[K, N] of residuals per iteration, when the solver records it, else None.
        contraction: Tensor[N], estimated ||J_T(x*)||_2 per sample, when requested, else None.
        backward: filled by implicit backward strategies once backpropagation has run:
            {"iterations": LongTensor[N], "residual": Tensor[N], "converged": BoolTensor[N]}.
    """

    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    nonfinite: torch.Tensor
    n_evals: int
    tol: float
    max_iter: int
    trace: torch.Tensor | None = None
    contraction: torch.Tensor | None = None
    backward: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.iterations.shape[0])

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def mean_iterations(self) -> float:
        return float(self.iterations.float().mean())

    def summary(self) -> dict[str, float]:
        """Plain-number summary for logs and reports."""
        out = {
            "mean_iters": self.mean_iterations(),
            "max_iters": float(self.iterations.max()),
            "converged_frac": float(self.converged.float().mean()),
            "max_residual": float(self.residual.max()),
            "n_evals": float(self.n_evals),
        }
        if self.contraction is not None:
            out["contraction_max"] = float(self.contraction.max())
        if "iterations" in self.backward:
            out["backward_mean_iters"] = float(self.backward["iterations"].float().mean())
        return out
