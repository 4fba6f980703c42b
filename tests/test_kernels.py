"""Blur kernels: normalisation, closed forms, seeded motion, disk area, loading, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jfb.errors import DataError
from jfb.physics import kernels


def _is_normalised_float32_cpu(k: torch.Tensor) -> bool:
    return (
        k.dtype == torch.float32
        and k.device.type == "cpu"
        and abs(float(k.double().sum()) - 1.0) < 1e-6
        and bool((k >= 0).all())
    )


@pytest.mark.parametrize("size,sigma", [(1, 1.0), (5, 5.0), (7, 1.3)])
def test_gaussian_closed_form(size, sigma):
    k = kernels.gaussian(size, sigma)
    assert k.shape == (size, size) and _is_normalised_float32_cpu(k)
    c = size // 2
    ref = np.array([[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2))
                     for j in range(size)] for i in range(size)])
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-6)


def test_gaussian_errors():
    with pytest.raises(ValueError, match="odd"):
        kernels.gaussian(4, 1.0)
    with pytest.raises(ValueError, match="size"):
        kernels.gaussian(0, 1.0)
    with pytest.raises(TypeError, match="size"):
        kernels.gaussian(5.0, 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            kernels.gaussian(5, bad)


def test_motion_seeded_and_asymmetric():
    k0 = kernels.motion(9, seed=0)
    assert k0.shape == (9, 9) and _is_normalised_float32_cpu(k0)
    assert torch.equal(k0, kernels.motion(9, seed=0))
    assert not torch.allclose(k0, kernels.motion(9, seed=1), atol=1e-3)
    for seed in range(5):
        k = kernels.motion(9, seed=seed)
        # not symmetric under any flip: a wrong (flipped) adjoint would show
        assert (k - k.flip(0, 1)).abs().max() > 1e-2
        assert (k - k.flip(0)).abs().max() > 1e-2 and (k - k.flip(1)).abs().max() > 1e-2
        # the trajectory spans the grid in its larger direction
        rows, cols = (k.sum(1) > 0), (k.sum(0) > 0)
        assert bool(rows[0] and rows[-1]) or bool(cols[0] and cols[-1])


def test_motion_options():
    # intensity 0: a straight line at constant speed, centred: symmetric under 180-degree rotation
    line = kernels.motion(11, seed=4, intensity=0.0)
    torch.testing.assert_close(line, line.flip(0, 1), atol=2e-3, rtol=0)
    shaky = kernels.motion(11, seed=4, intensity=1.0)
    assert (shaky - shaky.flip(0, 1)).abs().max() > 1e-2
    assert not torch.allclose(shaky, kernels.motion(11, seed=4, intensity=0.5), atol=1e-3)
    assert not torch.allclose(
        kernels.motion(11, seed=4, n_steps=64), kernels.motion(11, seed=4, n_steps=200), atol=1e-3
    )
    assert kernels.motion(17, seed=2).shape == (17, 17)
    assert torch.equal(kernels.motion(1), torch.ones(1, 1))
    with pytest.raises(ValueError, match="intensity"):
        kernels.motion(9, intensity=1.5)
    with pytest.raises(ValueError, match="n_steps"):
        kernels.motion(9, n_steps=1)
    with pytest.raises(ValueError, match="seed"):
        kernels.motion(9, seed=-1)


@pytest.mark.parametrize("radius", [1.5, 3.0, 4.7])
def test_disk(radius):
    aa = kernels.disk(radius)
    hard = kernels.disk(radius, antialias=False)
    assert _is_normalised_float32_cpu(aa) and _is_normalised_float32_cpu(hard)
    assert aa.shape[0] == 2 * math.ceil(radius - 0.5) + 1
    assert hard.shape[0] == 2 * math.floor(radius) + 1
    # anti-aliased: interior pixels are full, so sum / max = covered area = pi r^2
    assert float(aa.sum() / aa.max()) == pytest.approx(math.pi * radius**2, rel=0.01)
    # hard disk: equal weights exactly on the lattice points inside the circle
    n = hard.shape[0] // 2
    inside = [(i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)
              if i * i + j * j <= radius**2]
    assert int((hard > 0).sum()) == len(inside)
    assert torch.allclose(hard[hard > 0], torch.full((len(inside),), 1.0 / len(inside)))
    torch.testing.assert_close(aa, aa.flip(0))
    torch.testing.assert_close(aa, aa.T)
    with pytest.raises(ValueError, match="radius"):
        kernels.disk(0.0)


def test_disk_antialias_differs():
    aa, hard = kernels.disk(2.0), kernels.disk(2.0, antialias=False)
    assert aa.shape == hard.shape == (5, 5)
    assert hard[0, 1] == 0 and aa[0, 1] > 0 and float(aa[0, 2]) < float(aa[2, 2])
    assert torch.equal(kernels.disk(0.3), torch.ones(1, 1))


def test_from_array():
    a = np.array([[1.0, 2.0], [3.0, 0.0]])
    for src in (a, a.tolist(), torch.tensor(a)):
        k = kernels.from_array(src)
        assert _is_normalised_float32_cpu(k)
        np.testing.assert_allclose(k.numpy(), a / 6.0, rtol=1e-6)
    raw = kernels.from_array(a, normalize=False)
    np.testing.assert_allclose(raw.numpy(), a)
    per_channel = kernels.from_array(np.stack([a, 2 * a + 1]))
    assert per_channel.shape == (2, 2, 2)
    torch.testing.assert_close(per_channel.sum(dim=(1, 2)), torch.ones(2))
    src = torch.tensor(a)
    out = kernels.from_array(src, normalize=False)
    out += 1
    assert float(src[0, 0]) == 1.0  # a copy, not a view
    assert kernels.from_array(np.ones((3, 3), dtype=np.int64)).dtype == torch.float32


def test_from_file(tmp_path):
    a = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 0.5]])
    np.save(tmp_path / "k.npy", a)
    np.testing.assert_allclose(kernels.from_file(tmp_path / "k.npy").numpy(), a / a.sum(),
                               rtol=1e-6)
    grey = np.array([[0, 10, 20], [30, 40, 250]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "k.png")
    k = kernels.from_file(str(tmp_path / "k.png"))
    assert _is_normalised_float32_cpu(k)
    np.testing.assert_allclose(k.numpy(), grey / grey.sum(), rtol=1e-6)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (100, 0, 0)
    rgb[1, 1] = (0, 100, 0)
    rgb[0, 1] = (0, 0, 100)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    k = kernels.from_file(tmp_path / "rgb.png")
    ref = np.array([[0.299, 0.114], [0.0, 0.587]])
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-6)


def test_from_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        kernels.from_file(tmp_path / "missing.npy")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read"):
        kernels.from_file(tmp_path / "junk.png")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="cannot read"):
        kernels.from_file(tmp_path / "junk.npy")
    np.save(tmp_path / "neg.npy", np.array([[1.0, -1.0], [0.5, 0.5]]))
    with pytest.raises(DataError, match="negative"):
        kernels.from_file(tmp_path / "neg.npy")
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(DataError, match="sums to zero"):
        kernels.from_file(tmp_path / "black.png")


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.ones(3), "2-D"),
        (torch.ones(1, 2, 3, 3), "4-D"),
        (torch.ones(0, 3), "empty"),
        (torch.tensor([[1.0, float("nan")]]), "non-finite"),
        (torch.tensor([[1.0, float("inf")]]), "non-finite"),
        (torch.tensor([[1.0, -0.5]]), "negative"),
        (torch.zeros(3, 3), "sums to zero"),
        (torch.stack([torch.ones(2, 2), torch.zeros(2, 2)]), r"channel\(s\) \[1\]"),
        (torch.ones(2, 2, dtype=torch.complex64), "complex"),
        ("abc", "cannot be converted"),
    ],
)
def test_validate_errors(bad, match):
    with pytest.raises(ValueError, match=match) as info:
        kernels.validate(bad)
    assert isinstance(info.value, DataError)


def test_validate_keeps_valid_kernels():
    k = torch.rand(3, 5, dtype=torch.float64)
    out = kernels.validate(k)
    assert out.dtype == torch.float64 and torch.equal(out, k)
    assert kernels.validate([[1, 2]]).dtype == torch.float32
    assert kernels.validate(torch.rand(3, 2, 2)).shape == (3, 2, 2)


# ---------------------------------------------------------------------- fuzz regressions
def test_from_file_of_an_empty_npy_is_a_data_error(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")  # numpy raises EOFError: it used to escape
    with pytest.raises(DataError, match="empty.npy.*empty or truncated"):
        kernels.from_file(tmp_path / "empty.npy")


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("radius", [5e-324, 1e-300, 0.01, 0.04, 0.0441, 0.3, 0.5])
def test_a_tiny_disk_is_the_delta(radius, antialias):
    # anti-aliased disks below r ~ 0.044 hold no sub-pixel centre: they used to be 0/0 (NaN)
    assert torch.equal(kernels.disk(radius, antialias=antialias), torch.ones(1, 1))


@pytest.mark.parametrize("sigma", [5e-324, 1e-300, 1e-170, 1.5e-162])
def test_a_gaussian_with_a_vanishing_sigma_is_the_delta(sigma):
    # 2 sigma^2 underflows to 0: exp(-t^2 / 0) used to be 0/0 (NaN) at the centre
    k = kernels.gaussian(5, sigma)
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1.0
    assert torch.equal(k, delta)
    assert torch.equal(kernels.gaussian(5, 0.05), delta)  # the float32 kernel of a small sigma


def test_a_gaussian_with_a_huge_sigma_is_the_box():
    for sigma in (1e200, 1.7e308):  # sigma**2 overflows (Python raises OverflowError)
        torch.testing.assert_close(kernels.gaussian(3, sigma), torch.full((3, 3), 1 / 9))


def test_kernel_size_is_bounded():
    assert kernels.MAX_SIZE == 255 and kernels.MAX_DISK_RADIUS == 127.5
    assert kernels.gaussian(255, 1.0).shape == (255, 255)
    assert kernels.motion(255, seed=1).shape == (255, 255)
    assert kernels.disk(127.5).shape == kernels.disk(127.5, antialias=False).shape == (255, 255)
    with pytest.raises(ValueError, match=r"size must be <= 255.*got 100001"):
        kernels.gaussian(100001, 1.0)
    with pytest.raises(ValueError, match=r"size must be <= 255.*got 256"):
        kernels.motion(256)
    for antialias in (True, False):
        with pytest.raises(ValueError, match=r"radius must be <= 127.5.*got 127.6"):
            kernels.disk(127.6, antialias=antialias)
    with pytest.raises(ValueError, match="radius must be <= 127.5"):
        kernels.disk(1e300)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["gaussian", "motion", "disk", "disk-hard"]),
    size=st.integers(1, 41),
    value=st.floats(min_value=0, max_value=1e308, exclude_min=True, allow_subnormal=True),
)
def test_every_constructor_gives_a_finite_kernel_summing_to_one_or_raises(kind, size, value):
    try:
        if kind == "gaussian":
            k = kernels.gaussian(size | 1, value)
        elif kind == "motion":
            k = kernels.motion(size, seed=int(value) % 1000, intensity=min(value, 1.0))
        else:
            k = kernels.disk(value, antialias=kind == "disk")
    except ValueError as exc:
        assert kind.startswith("disk") and value > kernels.MAX_DISK_RADIUS, exc
        return
    assert k.dim() == 2 and max(k.shape) <= kernels.MAX_SIZE
    assert bool(torch.isfinite(k).all()) and _is_normalised_float32_cpu(k)
