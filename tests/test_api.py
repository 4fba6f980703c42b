"""The Python API of the main job: ``jfb.load_pretrained``, ``jfb.restore_image`` and the named
result of ``jfb.pipeline.load_model``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import jfb
from jfb.api import as_measurement
from jfb.config import Config
from jfb.deblur import restore_tensor
from jfb.errors import ConfigError, DataError
from jfb.models import build_model
from jfb.pipeline import LoadedModel, load_model, replace_blur
from jfb.tasks import get_task
from jfb.train.checkpoint import save_checkpoint

H, W = 20, 28  # not square, so that a transposed layout cannot pass


def _checkpoint(path, op: str = "op=blur,kernel=gaussian:5:2.0"):
    """A small random DE-ADMM model (noise 0.01) saved as a jfb checkpoint."""
    cfg = Config.from_dict({
        "task": f"{op},noise=0.01,train=natural:patches:16,val=natural:crops:16,name=tiny",
        "model": {"kind": "deadmm", "rho": 0.05, "cg_iters": 5,
                  "net": {"name": "dncnn", "depth": 2, "width": 4, "spectral_norm": False,
                          "residual": True},
                  "solver": {"max_iter": 6, "eval_max_iter": 6}}})
    torch.manual_seed(0)
    model = build_model(cfg.to_dict()["model"], get_task(cfg.task).operator(), channels=3)
    save_checkpoint(path, model=model, step=7, config=cfg.to_dict(), rng=False)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("api") / "tiny.safetensors")


def _photo(channels: int = 3) -> torch.Tensor:
    """A smooth (C, H, W) float image in [0, 1] whose channels differ."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    planes = [0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * torch.sin(6 * xx * yy)]
    return torch.stack(planes[:channels])


def _reference(path, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """restore_tensor on a freshly loaded model: what restore_image must give, in floats."""
    op = kwargs.pop("op", None)
    model, cfg, _ = load_model(path, op=op)
    return restore_tensor(model, cfg, y, **kwargs)


# --------------------------------------------------------------------------- load_model
def test_load_model_returns_a_named_result_that_still_unpacks_as_three(tiny):
    loaded = load_model(tiny)
    assert isinstance(loaded, LoadedModel)
    model, cfg, info = loaded
    assert model is loaded.model and cfg is loaded.config and info is loaded.info
    assert not model.training and cfg.model.kind == "deadmm"
    assert info["step"] == 7 and info["config"] == cfg.to_dict() and info["extra"] == {}


# ------------------------------------------------------------------------ load_pretrained
def test_load_pretrained_gives_the_shipped_model_ready_for_inference():
    loaded = jfb.load_pretrained()  # the natural model: it has no blur of its own
    assert isinstance(loaded, LoadedModel)
    assert not loaded.model.training
    assert loaded.config.task == "natural-anyblur" and loaded.config.model.kind == "deadmm"
    assert loaded.info["step"] > 0 and loaded.model.op is None
    told = jfb.load_pretrained(kernel="gaussian:9:2.0")
    assert told.model.op.kernel.shape[-1] == 9
    faces = jfb.load_pretrained("faces")  # the other shipped model, by name
    assert faces.config.task == "celeba-gauss5" and faces.model.op.kernel.shape[-1] == 5


def test_load_pretrained_options_reach_the_model(tiny):
    plain = jfb.load_pretrained(tiny)
    assert plain.config.task.endswith("name=tiny") and plain.model.op.kernel.shape[-1] == 5
    assert plain.model.solver.eval_max_iter == 6
    assert jfb.load_pretrained(tiny, kernel="gaussian:3:1.0").model.op.kernel.shape[-1] == 3
    assert jfb.load_pretrained(tiny, max_iter=2).model.solver.eval_max_iter == 2
    assert jfb.load_pretrained(tiny, tol=0.25).model.solver.eval_tol == 0.25
    assert plain.model.rho_factor == 1.0
    assert jfb.load_pretrained(tiny, noise=0.02).model.rho_factor == pytest.approx(4.0)


def test_load_pretrained_refuses_what_it_cannot_do(tmp_path, tiny):
    with pytest.raises(ConfigError, match="noise='auto'"):
        jfb.load_pretrained(tiny, noise="auto")
    with pytest.raises(ConfigError, match="max_iter"):
        jfb.load_pretrained(tiny, max_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        jfb.load_pretrained(tiny, tol=-1.0)
    with pytest.raises(ConfigError, match="not a device"):
        jfb.load_pretrained(tiny, device="toaster")
    with pytest.raises(ConfigError, match="kernel"):
        jfb.load_pretrained(tiny, kernel="sharp:3")
    inpaint = _checkpoint(tmp_path / "inpaint.safetensors", op="op=inpaint:box:0.25")
    with pytest.raises(DataError, match="apply to blur models"):
        jfb.load_pretrained(inpaint, kernel="gaussian:3:1.0")


# -------------------------------------------------------------------------- restore_image
@pytest.mark.parametrize("form", ["uint8 HWC", "uint16 HW1", "float32 HWC", "float64 HW",
                                  "uint8 HW", "torch float32 CHW", "torch float64 HW",
                                  "torch uint8 CHW", "torch float32 1HW"])
def test_restore_image_gives_back_the_type_shape_and_dtype_it_was_given(tiny, form):
    grey = "HW" in form.split()[-1] and "C" not in form.split()[-1]
    x = _photo(1 if grey else 3)
    dtype = form.split()[-2]
    scale = {"uint8": 255, "uint16": 65535}.get(dtype)
    if scale:
        x = (x * scale).round() / scale  # the values the integer image holds
    ref = _reference(tiny, x)
    layout = form.split()[-1]
    chw = x if layout in ("CHW", "1HW") else x[0] if layout == "HW" else x.permute(1, 2, 0)
    if form.startswith("torch"):
        image = (chw * scale).round().to(getattr(torch, dtype)) if scale else chw.to(
            getattr(torch, dtype))
    else:
        image = (chw.numpy() * scale).round().astype(dtype) if scale else chw.numpy().astype(
            dtype)
    out = jfb.restore_image(image, model=jfb.load_pretrained(tiny))
    assert type(out) is type(image) and tuple(out.shape) == tuple(image.shape)
    assert out.dtype == image.dtype
    got = torch.as_tensor(np.asarray(out, dtype=np.float64) if isinstance(out, np.ndarray)
                          else out.double())
    want = ref.double().reshape(1 if grey else 3, H, W)
    if layout in ("HWC", "HW1"):
        want = want.permute(1, 2, 0)
    want = want.reshape(got.shape)
    assert float((got - (want * scale).round() if scale else got - want).abs().max()) <= (
        1 if scale else 1e-5)


def test_restore_image_defaults_to_the_shipped_model_and_loads_a_checkpoint(tiny):
    x = _photo()
    image = x.permute(1, 2, 0).numpy()
    tiny_out = jfb.restore_image(image, checkpoint=tiny)
    assert np.abs(tiny_out - _reference(tiny, x).permute(1, 2, 0).numpy()).max() < 1e-5
    shipped = jfb.load_pretrained(max_iter=3, kernel="gaussian:5:1.0")
    default_out = jfb.restore_image(image, model=shipped)
    assert np.abs(default_out - tiny_out).max() > 1e-3
    with pytest.raises(DataError, match="--kernel"):  # the default model must be told the blur
        jfb.restore_image(image, model=jfb.load_pretrained(max_iter=3))


def test_restore_image_options_reach_the_restoration(tiny):
    x = _photo()
    plain = jfb.restore_image(x, checkpoint=tiny)
    blurred = jfb.restore_image(x, checkpoint=tiny, kernel="gaussian:3:1.0")
    ref = _reference(tiny, x, op=replace_blur("gaussian:3:1.0"))
    assert (blurred - ref).abs().max() < 1e-5 and (blurred - plain).abs().max() > 1e-4
    noisy = jfb.restore_image(x, model=jfb.load_pretrained(tiny), noise=0.05)
    assert (noisy - _reference(tiny, x, noise=0.05)).abs().max() < 1e-5
    assert (noisy - plain).abs().max() > 1e-4
    notes = []
    grainy = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    jfb.restore_image(grainy, checkpoint=tiny, noise="auto", report=notes.append)
    assert len(notes) == 1 and "noise" in notes[0]


def test_restore_image_passes_the_memory_bound(tiny, monkeypatch):
    import jfb.deblur

    seen = {}

    def spy(model, cfg, y, **kwargs):
        seen.update(kwargs)
        return y

    monkeypatch.setattr(jfb.deblur, "restore_tensor", spy)
    jfb.restore_image(_photo(), checkpoint=tiny, max_memory=12345)
    assert seen["max_memory"] == 12345


def test_restore_image_gives_an_inpainting_model_the_mask(tmp_path):
    ckpt = _checkpoint(tmp_path / "inpaint.safetensors", op="op=inpaint:box:0.25")
    x = _photo()
    observed = torch.ones(1, H, W)
    observed[..., 5:12, 8:20] = 0
    ref = _reference(ckpt, x * observed, mask=observed)
    image = (x * observed).permute(1, 2, 0).numpy()
    model = jfb.load_pretrained(ckpt)
    for mask in (observed[0].numpy() > 0, observed, observed[0].numpy()[..., None]):
        out = jfb.restore_image(image, model=model, mask=mask)
        assert np.abs(out - ref.permute(1, 2, 0).numpy()).max() < 1e-5
    unmasked = jfb.restore_image(image, model=model)
    assert np.abs(unmasked - out).max() > 1e-4
    with pytest.raises(DataError, match="mask must be the image's size"):
        jfb.restore_image(image, model=model, mask=np.ones((H, W + 1)))


def test_restore_image_runs_without_gradients(tiny):
    x = _photo().requires_grad_()
    out = jfb.restore_image(x, checkpoint=tiny)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize(("image", "match"), [
    (np.zeros((H, W, 4), np.uint8), "channels last"),
    (np.zeros((3, H, W), np.float32), "channels last"),
    (torch.zeros(H, W, 3), "channels first"),
    (np.zeros((H, W), np.int32), "dtype int32"),
    (np.zeros((H, W), bool), "dtype bool"),
    (np.full((H, W), np.nan, np.float32), "non-finite"),
    (np.zeros((0, W), np.float32), "empty"),
    ([[0.5] * W] * H, "numpy array or a torch tensor"),
])
def test_restore_image_refuses_what_is_not_an_image(tiny, image, match):
    with pytest.raises(DataError, match=match):
        jfb.restore_image(image, checkpoint=tiny)


def test_restore_image_refuses_a_model_with_loading_options(tiny):
    model = jfb.load_pretrained(tiny)
    with pytest.raises(ConfigError, match="load_pretrained"):
        jfb.restore_image(_photo(), model=model, kernel="gaussian:3:1.0")
    with pytest.raises(ConfigError, match="load_pretrained returns"):
        jfb.restore_image(_photo(), model=model.model)


def test_as_measurement_scales_integers_to_the_unit_range():
    y, _ = as_measurement(np.array([[0, 255]], np.uint8))
    assert y.tolist() == [[[0.0, 1.0]]]
    y, _ = as_measurement(np.array([[0, 65535]], np.uint16))
    assert y.tolist() == [[[0.0, 1.0]]]


def test_import_jfb_stays_light_and_exports_the_api():
    code = ("import sys, jfb; assert 'jfb.api' not in sys.modules and 'jfb.pipeline' not in "
            "sys.modules; from jfb.api import load_pretrained, restore_image; "
            "assert jfb.load_pretrained is load_pretrained and jfb.restore_image is restore_image")
    subprocess.run([sys.executable, "-c", code], check=True)
