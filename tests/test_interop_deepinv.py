"""jfb.interop.deepinv: adapters between jfb operators and deepinv physics, checked against
deepinv itself (docs/DEEPINV.md).

The tests that need deepinv skip when it is not installed. deepinv imports torchvision at import
time, and on the CPU-only torch 2.13.0 of the dev set-up no torchvision can be imported (PyPI's
wheels are built for the CUDA torch). So when ``import deepinv`` fails *because of torchvision*,
these tests import deepinv through a test-only torchvision stub (``_TorchvisionStub``, below):
every attribute of it is a placeholder that raises when called, and ``_no_torchvision_use``
asserts after each test that none was called, so the deepinv code under test provably never
touches torchvision. Where a real torchvision imports, deepinv is imported normally and the stub
is not used. The library itself never stubs anything.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import math
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import jfb.interop.deepinv as jdi
from jfb.interop import DeepinvOperator, blur_to_deepinv, from_deepinv, to_deepinv
from jfb.physics import Blur, Identity, LinearOperator, kernels


# ------------------------------------------------------------------ the torchvision test stub
class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``torchvision`` and its submodules as stub modules while deepinv is imported.

    Any attribute of a stub module is a placeholder class; calling or instantiating one (or a
    subclass) raises RuntimeError and is counted in ``calls``. Dunder lookups raise
    AttributeError as for a real module."""

    calls: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _Placeholder(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        _TorchvisionStub.calls.append(cls.__qualname__)
        raise RuntimeError(f"{cls.__qualname__} is a test stub (torchvision is not available)")


def _placeholder(qualname: str) -> type:
    return _Placeholder(qualname, (), {"__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


def _caused_by_torchvision(exc: BaseException) -> bool:
    """True if ``import deepinv`` failed inside torchvision (missing, or its C++ ops broken)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and (seen.name or "").startswith("torchvision"):
            return True
        tb = seen.__traceback__
        while tb is not None:
            if "torchvision" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return False


def _load_deepinv() -> tuple[types.ModuleType, str]:
    """deepinv and the route used: "real" (torchvision imports) or "stub" (see module doc)."""
    if sys.modules.get("deepinv") is not None:
        return sys.modules["deepinv"], _ROUTE.get("route", "real")
    try:
        return importlib.import_module("deepinv"), "real"
    except ModuleNotFoundError as exc:
        if exc.name == "deepinv":
            pytest.skip("deepinv is not installed (scripts/setup.sh installs it)")
        if not _caused_by_torchvision(exc):
            raise
    except Exception as exc:
        if not _caused_by_torchvision(exc):
            raise
    for name in [m for m in sys.modules if m.split(".")[0] in ("deepinv", "torchvision")]:
        del sys.modules[name]
    finder = _TorchvisionStub()
    sys.meta_path.insert(0, finder)
    try:
        dinv = importlib.import_module("deepinv")
    finally:
        sys.meta_path.remove(finder)
        # Later imports of torchvision (by anything) see the real state again.
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
    return dinv, "stub"


_ROUTE: dict[str, str] = {}  # how deepinv was imported in this process: "real" or "stub"


@pytest.fixture(scope="module")
def dinv():
    module, route = _load_deepinv()
    _ROUTE["route"] = route
    return module


@pytest.fixture(autouse=True)
def _no_torchvision_use():
    before = len(_TorchvisionStub.calls)
    yield
    assert _TorchvisionStub.calls[before:] == [], "deepinv called into the torchvision stub"


# ------------------------------------------------------------------------------- helpers
def _normalised(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum()


def _kernel(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name == "rand5x5":
        return _normalised(torch.rand(5, 5, generator=g))
    if name == "rand4x6":
        return _normalised(torch.rand(4, 6, generator=g))
    if name == "motion9":
        return torch.as_tensor(kernels.motion(9, seed=0), dtype=torch.float32)
    raise KeyError(name)


KERNELS = ["rand5x5", "rand4x6", "motion9"]
NATIVE_PADDINGS = ["zeros", "circular", "valid"]


def _x(shape=(2, 3, 16, 17), dtype=torch.float32, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> None:
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=0, atol=atol), float((a - b).abs().max())


def _adjoint_gap(op: LinearOperator, x: torch.Tensor) -> float:
    """| <Ax, y> - <x, A^T y> | / (||Ax|| ||y||) for a random y."""
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    lhs, rhs = torch.sum(ax * y), torch.sum(x * op.A_adjoint(y))
    return float((lhs - rhs).abs() / (ax.norm() * y.norm()))


def _dinv_adjointness(physics, x: torch.Tensor) -> float:
    """deepinv's own ``adjointness_test`` (relative error estimate), seeded, on 16 samples: with
    one sample its denominator |<v, A u>| can come close to 0 and the ratio is noisy."""
    torch.manual_seed(0)
    return float(physics.adjointness_test(u=x, num_samples=16))


# ----------------------------------------------------------------- tests without deepinv
def test_import_jfb_interop_does_not_import_deepinv():
    code = (
        "import sys, jfb, jfb.interop, jfb.interop.deepinv; "
        "assert 'deepinv' not in sys.modules and 'torchvision' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    "call",
    [
        lambda: from_deepinv(nn.Identity()),
        lambda: to_deepinv(Identity()),
        lambda: to_deepinv(Blur(torch.ones(3, 3), "reflect"), 0.1),
        lambda: blur_to_deepinv(Blur(torch.ones(3, 3), "zeros")),
    ],
)
def test_clear_import_error_when_deepinv_missing(monkeypatch, call):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # what an absent package looks like
    with pytest.raises(ImportError, match=r"needs deepinv, which is not installed.*pip install"):
        call()


def test_clear_import_error_when_deepinv_import_breaks(monkeypatch):
    def broken(name):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(jdi, "importlib", types.SimpleNamespace(import_module=broken))
    with pytest.raises(ImportError, match=r"installed but `import deepinv` failed.*torchvision"):
        to_deepinv(Identity())


@pytest.mark.parametrize("bad", [torch.zeros(3), "blur", 3.0, None, Blur(torch.ones(3, 3))])
def test_from_deepinv_rejects_non_physics(bad):
    with pytest.raises(TypeError, match="from_deepinv"):
        from_deepinv(bad)


@pytest.mark.parametrize("bad", [torch.zeros(3), "blur", None, nn.Conv2d(1, 1, 3)])
def test_to_deepinv_rejects_non_operators(bad):
    with pytest.raises(TypeError, match="LinearOperator"):
        to_deepinv(bad)


def test_argument_validation():
    blur = Blur(torch.ones(3, 3))
    for bad in ("0.1", True, None, torch.tensor(0.1)):
        with pytest.raises(TypeError, match="noise_sigma"):
            to_deepinv(blur, bad)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="noise_sigma"):
            to_deepinv(blur, bad)
    with pytest.raises(TypeError, match="native"):
        to_deepinv(blur, native="yes")
    with pytest.raises(TypeError, match="Blur"):
        blur_to_deepinv(Identity())
    with pytest.raises(TypeError, match="use_fft"):
        blur_to_deepinv(blur, use_fft=1)
    with pytest.raises(ValueError, match="no exact deepinv equivalent"):
        blur_to_deepinv(Blur(torch.ones(3, 3), "reflect"))


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        _ = jdi.NoSuchThing


# ------------------------------------------------------- side by side: our Blur vs deepinv's
@pytest.mark.parametrize("kname", KERNELS)
@pytest.mark.parametrize("padding", NATIVE_PADDINGS)
@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("use_fft", [False, True])
def test_blur_matches_deepinv_blur(dinv, kname, padding, method, use_fft):
    """Our Blur(k, p) == deepinv Blur(filter=k[None, None], padding=p): same kernel, unflipped."""
    k = _kernel(kname)
    ours = Blur(k, padding, method=method)
    theirs = dinv.physics.Blur(filter=k[None, None], padding=padding, use_fft=use_fft)
    x = _x()
    y = ours.A(x)
    _close(y, theirs.A(x))
    v = _x(y.shape, seed=1)
    _close(ours.A_adjoint(v), theirs.A_adjoint(v))


@pytest.mark.parametrize("kname", KERNELS)
@pytest.mark.parametrize("dpad", ["reflect", "replicate"])
def test_reflect_has_no_deepinv_equivalent(dinv, kname, dpad):
    """Our "reflect" (half-sample symmetric) is neither deepinv's "reflect" nor "replicate"."""
    k = _kernel(kname)
    x = _x()
    ours = Blur(k, "reflect")
    theirs = dinv.physics.Blur(filter=k[None, None], padding=dpad)
    assert (ours.A(x) - theirs.A(x)).abs().max() > 1e-2
    assert (ours.A_adjoint(x) - theirs.A_adjoint(x)).abs().max() > 1e-2


@pytest.mark.parametrize("kname", KERNELS)
@pytest.mark.parametrize("padding", NATIVE_PADDINGS)
@pytest.mark.parametrize("use_fft", [False, True])
def test_blur_to_deepinv_is_native_and_exact(dinv, kname, padding, use_fft):
    k = _kernel(kname)
    ours = Blur(k, padding)
    theirs = blur_to_deepinv(ours, use_fft=use_fft)
    assert type(theirs) is dinv.physics.Blur
    assert theirs.padding == padding and theirs.use_fft is use_fft
    x = _x()
    y = ours.A(x)
    _close(theirs.A(x), y)
    v = _x(y.shape, seed=2)
    _close(theirs.A_adjoint(v), ours.A_adjoint(v))
    assert _dinv_adjointness(theirs, x) < 1e-5


@pytest.mark.parametrize("padding", NATIVE_PADDINGS)
def test_blur_to_deepinv_per_channel_kernel(dinv, padding):
    g = torch.Generator().manual_seed(3)
    k = torch.rand(3, 5, 4, generator=g)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    ours = Blur(k, padding)
    theirs = to_deepinv(ours)
    assert type(theirs) is dinv.physics.Blur and tuple(theirs.filter.shape) == (1, 3, 5, 4)
    x = _x()
    y = ours.A(x)
    _close(theirs.A(x), y)
    _close(theirs.A_adjoint(y), ours.A_adjoint(y))


@pytest.mark.parametrize("kname", KERNELS)
def test_circular_blur_matches_deepinv_blurfft(dinv, kname):
    """deepinv's BlurFFT (circular, diagonalised by the FFT) is our "circular" Blur too."""
    k = _kernel(kname)
    ours = Blur(k, "circular")
    op = from_deepinv(dinv.physics.BlurFFT(img_size=(3, 16, 17), filter=k[None, None]))
    x = _x()
    _close(op.A(x), ours.A(x))
    _close(op.A_adjoint(x), ours.A_adjoint(x))


def test_circular_kernel_larger_than_image(dinv):
    """deepinv's direct circular mode wraps like ours while the half-kernel fits in the image,
    and raises (rather than differs) beyond; its FFT path is not used by default."""
    k = _normalised(torch.rand(9, 9, generator=torch.Generator().manual_seed(4)))
    ours = Blur(k, "circular")
    theirs = to_deepinv(ours)
    x = _x((1, 2, 6, 5))
    _close(theirs.A(x), ours.A(x))
    _close(theirs.A_adjoint(x), ours.A_adjoint(x))
    with pytest.raises(RuntimeError):
        theirs.A(_x((1, 2, 3, 3)))


# ----------------------------------------------------------------------- from_deepinv
def _physics_zoo(dinv):
    k = _kernel("rand4x6")
    return {
        "blur-zeros": dinv.physics.Blur(filter=k[None, None], padding="zeros"),
        "blur-circular-noisy": dinv.physics.Blur(
            filter=k[None, None], padding="circular",
            noise_model=dinv.physics.GaussianNoise(sigma=0.05),
        ),
        "downsampling": dinv.physics.Downsampling(
            img_size=(3, 16, 16), filter="gaussian", factor=2, padding="circular"
        ),
        "inpainting": dinv.physics.Inpainting(
            img_size=(3, 16, 16), mask=0.5, rng=torch.Generator().manual_seed(0)
        ),
    }


@pytest.mark.parametrize("name", ["blur-zeros", "blur-circular-noisy", "downsampling",
                                  "inpainting"])
def test_from_deepinv_round_trip(dinv, name):
    physics = _physics_zoo(dinv)[name]
    op = from_deepinv(physics)
    assert isinstance(op, LinearOperator) and isinstance(op, DeepinvOperator)
    assert op.physics is physics and "physics" in dict(op.named_children())
    x = _x((2, 3, 16, 16))
    y = op.A(x)
    _close(y, physics.A(x), atol=0)  # same call, noise dropped
    _close(op.A_adjoint(y), physics.A_adjoint(y), atol=0)
    _close(op(x), y, atol=0)
    assert op.out_shape(x.shape) == tuple(y.shape)
    assert _adjoint_gap(op, x) < 1e-5


def test_from_deepinv_moves_the_physics_buffers(dinv):
    physics = _physics_zoo(dinv)["blur-zeros"]
    op = from_deepinv(physics)
    assert any(b is physics.filter for b in op.buffers())
    op.to(torch.float64)  # .to reaches the physics' buffers (a device move works alike)
    assert physics.filter.dtype == torch.float64
    assert _adjoint_gap(op, _x(dtype=torch.float64)) < 1e-12


def test_from_deepinv_noise_is_dropped_and_reported(dinv):
    zoo = _physics_zoo(dinv)
    noisy = from_deepinv(zoo["blur-circular-noisy"])
    x = _x((1, 3, 16, 16))
    _close(noisy.A(x), noisy.A(x), atol=0)
    torch.manual_seed(0)
    assert (noisy.physics(x) - noisy.A(x)).abs().max() > 1e-3  # deepinv's forward adds noise
    assert noisy.gaussian_sigma == pytest.approx(0.05)
    assert from_deepinv(zoo["blur-zeros"]).gaussian_sigma == 0.0
    poisson = dinv.physics.Blur(filter=_kernel("rand5x5")[None, None],
                                noise_model=dinv.physics.PoissonNoise(gain=0.1))
    assert from_deepinv(poisson).gaussian_sigma is None


def test_from_deepinv_rejects_non_linear_physics(dinv):
    with pytest.raises(TypeError, match="LinearPhysics"):
        from_deepinv(dinv.physics.Physics(A=lambda x, **kw: x**2))
    with pytest.raises(TypeError, match="LinearPhysics"):
        from_deepinv(nn.Conv2d(1, 1, 3))


def test_degrad_on_a_deepinv_operator_trains(dinv):
    from jfb.deq import JFB, Anderson
    from jfb.models import DEGrad
    from jfb.nets import build_net

    physics = dinv.physics.Blur(filter=_kernel("rand5x5")[None, None], padding="circular")
    op = from_deepinv(physics)
    torch.manual_seed(0)
    net = build_net("dncnn", in_channels=3, depth=3, width=8, spectral_norm=False)
    model = DEGrad(op, net, solver=Anderson(max_iter=15, tol=1e-4), backward=JFB())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    y = physics.A(x)
    model.train()
    x_hat = model(y)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
    loss = torch.mean((x_hat - x) ** 2)
    loss.backward()
    grads = [p.grad for p in model.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------- to_deepinv
def _ops():
    k = _kernel("motion9")
    return {
        "identity": Identity(),
        "blur-reflect": Blur(k, "reflect"),
        "blur-zeros-wrapped": Blur(k, "zeros"),
        "blur-valid-fft-wrapped": Blur(_kernel("rand4x6"), "valid", method="fft"),
    }


@pytest.mark.parametrize("name", ["identity", "blur-reflect", "blur-zeros-wrapped",
                                  "blur-valid-fft-wrapped"])
def test_to_deepinv_wraps_our_operator(dinv, name):
    op = _ops()[name]
    physics = to_deepinv(op, native=False)
    assert isinstance(physics, dinv.physics.LinearPhysics)
    assert type(physics) is jdi.JFBPhysics and physics.op is op
    assert isinstance(physics.noise_model, dinv.physics.ZeroNoise)
    x = _x()
    y = op.A(x)
    _close(physics.A(x), y, atol=0)
    _close(physics(x), y, atol=0)  # sigma 0: no noise
    _close(physics.A_adjoint(y), op.A_adjoint(y), atol=0)
    _close(physics.A_adjoint_A(x), op.normal(x), atol=0)
    assert _dinv_adjointness(physics, x) < 1e-5
    # a deepinv algorithm on our operator: prox of gamma/2 ||Ax - y||^2 at z
    gamma = 0.5
    z = _x(seed=3).double()
    op64 = op.to(torch.float64)
    p = to_deepinv(op64, native=False).prox_l2(z, y.double(), gamma, max_iter=200, tol=1e-10)
    residual = gamma * op64.normal(p) + p - gamma * op64.A_adjoint(y.double()) - z
    assert float(residual.norm() / z.norm()) < 1e-6


def test_to_deepinv_picks_native_blur_when_exact(dinv):
    ops = _ops()
    assert type(to_deepinv(ops["blur-zeros-wrapped"])) is dinv.physics.Blur
    assert type(to_deepinv(ops["blur-reflect"])) is jdi.JFBPhysics  # no native equivalent

    class MyBlur(Blur):
        pass

    assert type(to_deepinv(MyBlur(torch.ones(3, 3)))) is jdi.JFBPhysics  # subclasses: wrapped


@pytest.mark.parametrize("native", [True, False])
def test_to_deepinv_gaussian_noise(dinv, native):
    op = Blur(_kernel("rand5x5"), "circular")
    physics = to_deepinv(op, noise_sigma=0.1, native=native)
    assert isinstance(physics.noise_model, dinv.physics.GaussianNoise)
    assert float(physics.noise_model.sigma) == pytest.approx(0.1)
    x = _x((4, 3, 32, 32))
    torch.manual_seed(0)
    noise = physics(x) - op.A(x)
    assert float(noise.std()) == pytest.approx(0.1, rel=0.05)
    assert from_deepinv(physics).gaussian_sigma == pytest.approx(0.1)


def test_jfb_physics_moves_and_clones(dinv):
    op = Blur(_kernel("rand4x6"), "reflect")
    physics = to_deepinv(op, noise_sigma=0.02)
    assert type(physics).__module__ == "jfb.interop.deepinv"
    physics.to(torch.float64)  # moves our operator's buffers and deepinv's noise sigma
    assert op.kernel.dtype == torch.float64 and physics.noise_model.sigma.dtype == torch.float64
    clone = physics.clone()  # deepinv's deepcopy-based clone
    assert type(clone) is jdi.JFBPhysics and clone.op is not op
    x = _x(dtype=torch.float64)
    _close(clone.A(x), op.A(x), atol=0)
    _close(clone.A_adjoint(x), op.A_adjoint(x), atol=0)


def test_jfb_physics_rejects_non_operators(dinv):
    with pytest.raises(TypeError, match="LinearOperator"):
        jdi.JFBPhysics(nn.Identity())


def test_round_trip_both_ways(dinv):
    ours = Blur(_kernel("rand5x5"), "zeros")
    back = from_deepinv(to_deepinv(ours))
    x = _x()
    y = ours.A(x)
    _close(back.A(x), y)
    _close(back.A_adjoint(y), ours.A_adjoint(y))
