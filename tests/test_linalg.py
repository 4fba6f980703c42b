"""jfb.linalg, the layer below models and baselines: its per-sample loop, its stop measure
against the engine's residual, and the names the baselines still export from it."""

from __future__ import annotations

import importlib

import torch

import jfb.baselines
from jfb import linalg
from jfb.deq import relative_residual
from jfb.linalg import iterate_per_sample, relative_change


def test_iterate_per_sample_freezes_each_sample_and_only_steps_the_active_ones():
    seen = []

    def step(state, consts):
        (k,) = state
        (scale,) = consts
        seen.append(k.shape[0])
        k = k + 1
        return (k,), scale / k  # sample i stops at k = ceil(scale_i / tol)

    scale = torch.tensor([1.0, 3.0, 2.0])
    (k,), iters = iterate_per_sample(step, (torch.zeros(3),), (scale,), max_iter=100, tol=0.1)
    assert iters.tolist() == [10, 30, 20]
    assert k.tolist() == [10.0, 30.0, 20.0]
    assert seen[0] == 3 and seen[15] == 2 and seen[-1] == 1
    (_,), iters = iterate_per_sample(step, (torch.zeros(3),), (scale,), max_iter=12, tol=0.1)
    assert iters.tolist() == [10, 12, 12]


def test_relative_change_is_the_engine_residual_without_eps():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    new = old + 0.1 * torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(relative_change(new, old), relative_residual(new, old, eps=0.0),
                               rtol=1e-15, atol=0)
    zero = torch.zeros(1, 3)
    assert relative_change(zero, zero).tolist() == [0.0]  # 0/0: nothing changed
    assert relative_change(new[:1], new[:1]).tolist() == [0.0]


def test_baselines_reexport_the_linalg_functions():
    pnp = importlib.import_module("jfb.baselines.pnp")
    tikhonov = importlib.import_module("jfb.baselines.tikhonov")  # the module, not the function
    assert pnp.admm_x_update is linalg.admm_x_update
    assert jfb.baselines.tikhonov is tikhonov.tikhonov is linalg.tikhonov
    for name in ("conjugate_gradient", "gradient", "gradient_adjoint", "batch_weight"):
        assert getattr(tikhonov, name) is getattr(linalg, name) is getattr(jfb.baselines, name,
                                                                          getattr(linalg, name))


def test_differences_without_autograd_are_the_same_bits():
    # without autograd gradient and its adjoint write into one tensor, in the same order
    from jfb.linalg import gradient, gradient_adjoint

    x = torch.randn(2, 3, 17, 23, dtype=torch.float32)
    g = torch.randn(2, 3, 2, 17, 23, dtype=torch.float32)
    with torch.no_grad():
        fast = gradient(x), gradient_adjoint(g)
    slow = (gradient(x.requires_grad_()).detach(), gradient_adjoint(g.requires_grad_()).detach())
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
