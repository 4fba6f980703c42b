"""Test-session settings.

One intra-op thread: the tests run many tiny tensor operations, for which thread start-up and
contention on a busy 2-core machine cost 50-100x the work itself. Set before torch is imported so
that subprocesses started by the tests (DDP, signals) inherit it, which also keeps their floating
point identical to the parent's (bitwise resume comparisons need the same thread count).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture()
def assert_penalty_grad_matches_fd():
    """``check(model, raw, x_star, y)``: the gradient of ``model.jacobian_frobenius(x_star, y)``
    (summed, one fixed probe) w.r.t. the scalar parameter ``raw`` equals a central finite
    difference (h = 1e-6, rel 1e-6); leaves ``raw`` at its last probed value."""

    def check(model, raw, x_star, y):
        def at(value: float) -> torch.Tensor:
            with torch.no_grad():
                raw.fill_(value)
            return model.jacobian_frobenius(x_star, y, generator=torch.Generator().manual_seed(2))

        raw0, h = float(raw.detach()), 1e-6
        at(raw0).sum().backward()
        fd = (float(at(raw0 + h).detach()) - float(at(raw0 - h).detach())) / (2 * h)
        assert float(raw.grad) == pytest.approx(fd, rel=1e-6)

    return check
