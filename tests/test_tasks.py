"""Task registry, forward models, data wiring, seeded evaluation noise, spec parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jfb.data import EVAL_IMAGES, celeba128_root
from jfb.errors import ConfigError, DataError
from jfb.metrics import psnr
from jfb.physics import (
    Blur,
    BoxMask,
    Downsample,
    GaussianNoise,
    Identity,
    RandomMask,
    kernels,
)
from jfb.physics.radon import Radon
from jfb.tasks import TASKS, Task, get_task, list_tasks, parse_task


def _need_celeba() -> Path:
    try:
        return celeba128_root()
    except DataError as exc:
        pytest.skip(f"CelebA-128 not available beside the repository: {exc}")


BLUR_TASKS = ["celeba-gauss5", "celeba-motion", "natural-gauss5", "demo"]
OTHER_TASKS = {
    "celeba-denoise": Identity,
    "celeba-sr2": Downsample,
    "celeba-sr4": Downsample,
    "celeba-inpaint": RandomMask,
    "celeba-inpaint-box": BoxMask,
    "celeba-radon": Radon,
}


def test_registry_lists_the_protocol_tasks() -> None:
    assert list_tasks() == BLUR_TASKS + ["natural-anyblur"] + list(OTHER_TASKS)
    for name in BLUR_TASKS:
        t = get_task(name)
        assert t is TASKS[name] and t.name == name and t.description
        op, noise = t.operator(), t.noise()
        assert isinstance(op, Blur) and isinstance(noise, GaussianNoise)
        assert op.padding == "zeros"
        assert float(op.kernel.sum()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ConfigError, match="unknown task 'celeba'.*celeba-gauss5"):
        get_task("celeba")


def test_forward_models_follow_the_protocol() -> None:
    g = get_task("celeba-gauss5")
    assert torch.equal(g.operator().kernel, kernels.gaussian(5, 5.0))
    assert g.noise().sigma == 0.005
    m = get_task("celeba-motion")
    k = m.operator().kernel
    assert torch.equal(k, kernels.motion(9, seed=0)) and k.shape == (9, 9)
    assert not torch.allclose(k, k.flip(0).flip(1))  # not symmetric: a wrong adjoint shows
    assert m.noise().sigma == 0.01
    for name in ("natural-gauss5", "demo"):
        t = get_task(name)
        assert torch.equal(t.operator().kernel, g.operator().kernel)
        assert t.noise().sigma == g.noise().sigma


def test_celeba_tasks_use_the_shared_data() -> None:
    root = _need_celeba()
    for name in ("celeba-gauss5", "celeba-motion"):
        t = get_task(name)
        val, train = t.val_set(), t.train_set()
        assert len(val) == 1000 and len(train) == 8000
        assert val.files[0] == root / "val" / "008001.jpg"  # type: ignore[attr-defined]
        assert t.val_set(limit=3).__len__() == 3
        x = t.train_set(crop=64, seed=0)[0]
        assert x.shape == (3, 64, 64)
        assert torch.equal(x, t.train_set(crop=64, seed=0)[0])  # seeded random crop
        assert not torch.equal(x, t.train_set(crop=64, seed=1)[0])
        assert t.val_set(limit=1, crop=100, mode="grey")[0].shape == (1, 100, 100)


def test_celeba_eval_noise_is_fixed_and_training_noise_is_fresh() -> None:
    _need_celeba()
    t = get_task("celeba-gauss5")
    a, b = t.val_pairs(limit=4), t.val_pairs(limit=4)  # two separate constructions
    for i in (0, 3):
        assert torch.equal(a[i][1], b[i][1])
    x, y = a[2]
    n = y - t.operator().A(x[None])[0]
    assert torch.allclose(n, 0.005 * torch.randn(x.shape, generator=torch.Generator()
                                                  .manual_seed(2)), atol=1e-6)
    assert not torch.equal(t.val_pairs(limit=1, seed=1)[0][1], a[0][1])
    tr = t.train_pairs()
    assert torch.equal(tr[0][0], tr[0][0])
    assert not torch.equal(tr[0][1], tr[0][1])
    # the blurred, noisy input scores about the protocol's 24 dB (first 20 images)
    pairs = t.val_pairs(limit=20)
    xs, ys = (torch.stack(v) for v in zip(*(pairs[i] for i in range(20)), strict=True))
    assert 22.0 < psnr(ys.clamp(0, 1), xs).mean().item() < 26.0


def test_natural_tasks_data() -> None:
    t = get_task("natural-gauss5")
    val = t.val_set()
    assert len(val) == len(EVAL_IMAGES) and val[0].shape == (3, 256, 256)
    train = t.train_set()
    assert train[0].shape == (3, 64, 64)
    assert t.train_set(crop=32)[0].shape == (3, 32, 32)
    assert not torch.equal(t.train_set(seed=1)[0], train[0])
    assert t.val_set(crop=128)[0].shape == (3, 128, 128)
    assert t.val_set(mode="grey")[0].shape == (1, 256, 256)
    assert t.train_set(mode="grey")[0].shape == (1, 64, 64)
    demo = get_task("demo")
    assert demo.train_set()[0].shape == (3, 48, 48)
    assert demo.val_set()[0].shape == (3, 128, 128)
    p1, p2 = demo.val_pairs(), demo.val_pairs()
    assert torch.equal(p1[5][1], p2[5][1])
    assert p1[5][1].shape == (3, 128, 128)
    tp = demo.train_pairs()
    assert torch.equal(tp[0][0], tp[0][0]) and not torch.equal(tp[0][1], tp[0][1])


def test_parse_task_examples(tmp_path: Path) -> None:
    t = parse_task("kernel=gaussian:7:2.0,noise=0.01,padding=circular,data=natural")
    assert torch.equal(t.operator().kernel, kernels.gaussian(7, 2.0))
    assert t.operator().padding == "circular" and t.noise().sigma == 0.01
    assert t.val_data == "natural:crops:256" and t.train_data == "natural:patches:64"
    m = parse_task("kernel=motion:9:3")
    assert torch.equal(m.kernel_tensor(), kernels.motion(9, seed=3))
    assert m.noise_sigma == 0.005 and m.padding == "zeros"  # celeba-gauss5's defaults
    assert m.train_data == "celeba128:train"
    assert torch.equal(parse_task("kernel=motion:9:3:0.2").kernel_tensor(),
                       kernels.motion(9, seed=3, intensity=0.2))
    assert torch.equal(parse_task("kernel=disk:2.5").kernel_tensor(), kernels.disk(2.5))
    k = np.outer([1, 2, 1], [1, 0, 3]).astype(np.float64)
    np.save(tmp_path / "k.npy", k)
    f = parse_task(f"kernel=file:{tmp_path / 'k.npy'},noise=0")
    assert torch.allclose(f.kernel_tensor(), torch.from_numpy(k / k.sum()).float())
    assert f.noise().sigma == 0.0
    assert get_task("kernel=gaussian:3:1.0,name=mine").name == "mine"


def test_parse_task_data_folders(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(flat / f"{i}.png")
    t = parse_task(f"data={flat}")
    assert t.train_data is None and t.val_data == f"folder:{flat}"
    assert len(t.val_set()) == 3 and t.val_set()[1].shape == (3, 20, 24)
    with pytest.raises(ConfigError, match="no training data"):
        t.train_set()
    assert torch.equal(t.val_pairs()[2][1], parse_task(f"data={flat}").val_pairs()[2][1])

    split = tmp_path / "split"
    for s in ("train", "val"):
        (split / s).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(split / s / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(split / "train" / "b.png")
    t2 = parse_task(f"data={split}")
    assert len(t2.train_set()) == 2 and len(t2.val_set()) == 1
    assert t2.train_set(crop=8)[0].shape == (3, 8, 8)
    t3 = parse_task(f"data={split},train={flat},val=natural:crops:64")
    assert len(t3.train_set()) == 3 and t3.val_set()[0].shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("kernel=gaussian:6:2.0", "kernel=.*odd"),
        ("kernel=motion:8", "kernel=.*odd"),
        ("kernel=gaussian:5:-1", "sigma must be > 0"),
        ("kernel=gaussian:5", "gaussian:SIZE:SIGMA"),
        ("kernel=gaussian:five:1.0", "size must be an integer"),
        ("kernel=box:5", "unknown kernel type 'box'"),
        ("kernel=disk:0", "radius"),
        ("kernel=file:/no/such/k.npy", "kernel=.*not found"),
        ("kernel=motion:9:-2", "seed"),
        ("kernel=motion:9:0:1.5", "intensity"),
        ("noise=-0.01", "noise"),
        ("noise=nan", "noise.*finite"),
        ("noise=abc", "noise must be a number"),
        ("padding=mirror", "padding='mirror'"),
        ("kernel=gaussian:5:1.0,blur=3", "unknown key 'blur'"),
        ("kernel=gaussian:5:1.0,noise", "not key=value"),
        ("noise=0.1,noise=0.2", "given twice"),
        ("noise=", "noise= is empty"),
        ("data=/no/such/folder", "data="),
        ("val=/no/such/folder", "val="),
        ("train=natural:patches:x", "size must be an integer"),
        ("train=celeba128:test", "celeba128:train or celeba128:val"),
        (" , ", "no key=value"),
        ("kernel=gaussian:100001:1.0", r"kernel=.*size must be <= 255 \(the maximum kernel size"),
        ("kernel=motion:257", r"kernel=.*size must be <= 255"),
        ("kernel=disk:127.6", r"kernel=.*radius must be <= 127.5"),
        ("kernel=disk:1e300", r"kernel=.*radius must be <= 127.5"),
        ("train=None", "train='None'"),
    ],
)
def test_parse_task_errors_name_the_field(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_task(spec)


def test_task_round_trip_and_validation() -> None:
    for name in list_tasks():
        t = get_task(name)
        assert parse_task(t.to_spec()) == t
    with pytest.raises(ConfigError, match="padding"):
        Task("x", "gaussian:5:1.0", 0.01, padding="same")
    with pytest.raises(ConfigError, match="noise"):
        Task("x", "gaussian:5:1.0", float("inf"))
    with pytest.raises(ConfigError, match="data kind"):
        Task("x", "gaussian:5:1.0", 0.01, val_data="imagenet:val")
    with pytest.raises(ValueError, match="limit"):
        get_task("demo").val_set(limit=0)


def test_config_data_root_is_where_build_run_reads_celeba(tmp_path):
    """data.root takes effect: a fake CelebA-128 layout there is what the run trains and
    validates on; a root for data that names its own images is refused."""
    from jfb.config import load_config
    from jfb.data import save_image
    from jfb.errors import ConfigError
    from jfb.pipeline import build_run

    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            save_image(torch.full((3, 16, 16), 0.1 * (i + 1)), tmp_path / split / f"{i:06d}.jpg")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.patch_size=8",
                             "model.net.depth=3", "model.net.width=4"])
    run = build_run(cfg)
    assert len(run.train_pairs) == 3 and len(run.val_pairs) == 2
    x, _ = run.val_pairs[1]
    assert x.shape == (3, 16, 16) and abs(float(x.mean()) - 0.2) < 0.01
    with pytest.raises(ConfigError, match="data.root"):
        build_run(load_config(None, [f"data.root={tmp_path}", "task=natural-gauss5"]))


def test_other_operator_tasks_build_their_operator() -> None:
    x = torch.rand(1, 3, 128, 128)
    for name, cls in OTHER_TASKS.items():
        t = get_task(name)
        op = t.operator()
        assert type(op) is cls and t.kernel is None and t.op_kind == t.op.split(":")[0]
        assert parse_task(t.to_spec()) == t
        with pytest.raises(ConfigError, match="no blur kernel"):
            t.kernel_tensor()
    assert get_task("celeba-sr4").operator().out_shape(x.shape) == (1, 3, 32, 32)
    assert get_task("celeba-sr2").operator().factor == 2
    m = get_task("celeba-inpaint").operator().A(torch.ones_like(x))
    assert abs(float(1 - m.mean()) - 0.7) < 0.02
    assert get_task("celeba-radon").operator().out_shape(x.shape) == (1, 3, 60, 128)


@pytest.mark.parametrize(
    ("spec", "cls", "check"),
    [
        ("op=denoise,noise=0.05", Identity, lambda op: True),
        ("op=sr:3:box", Downsample, lambda op: op.factor == 3 and op.filter == "box"),
        ("op=sr:2", Downsample, lambda op: op.filter == "gaussian" and op.padding == "reflect"),
        ("op=sr:2,padding=circular", Downsample, lambda op: op.padding == "circular"),
        ("op=inpaint:random:0.5:7", RandomMask, lambda op: op.missing == 0.5 and op.seed == 7),
        ("op=inpaint:box:0.3", BoxMask, lambda op: op.size == 0.3),
        ("op=radon:30", Radon, lambda op: True),
        ("op=blur,kernel=disk:2", Blur, lambda op: op.kernel_size == (5, 5)),
    ],
)
def test_parse_task_operators(spec, cls, check) -> None:
    t = parse_task(spec)
    op = t.operator()
    assert type(op) is cls and check(op)
    assert parse_task(t.to_spec()) == t


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("op=deconv", "unknown operator 'deconv'"),
        ("op=sr", "expected sr:FACTOR"),
        ("op=sr:1", "factor must be >= 2"),
        ("op=sr:x", "factor must be an integer"),
        ("op=sr:2:bicubic", "filter must be one of"),
        ("op=sr:2,padding=valid", "applies to op=blur only"),
        ("op=sr:2,kernel=gaussian:3:1.0", "kernel= applies to op=blur only"),
        ("op=inpaint:random:1.5", r"fraction missing must be in \(0, 1\)"),
        ("op=inpaint:random:nan", "finite"),
        ("op=inpaint:random:0.5:-1", "seed must be >= 0"),
        ("op=inpaint:box:0", "box size"),
        ("op=inpaint:ring:0.5", "expected inpaint:random"),
        ("op=radon:0", "angles must be >= 1"),
        ("op=radon", "expected radon:ANGLES"),
        ("op=denoise:3", "takes no arguments"),
    ],
)
def test_parse_task_operator_errors(spec, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_task(spec)
    with pytest.raises(ConfigError):
        Task("x", None, 0.01, op="sr:1")
    with pytest.raises(ConfigError, match="applies to op=blur only"):
        Task("x", "gaussian:5:1.0", 0.01, op="denoise")


# ---------------------------------------------------------------------- fuzz regressions
def test_tiny_disks_and_gaussians_are_delta_kernels() -> None:
    assert torch.equal(parse_task("kernel=disk:0.04").kernel_tensor(), torch.ones(1, 1))
    k = parse_task("kernel=gaussian:3:1e-300").kernel_tensor()
    assert torch.equal(k, torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, 0, 0]]))
    assert parse_task("kernel=gaussian:255:2.0").kernel_tensor().shape == (255, 255)


@pytest.mark.parametrize("channels", [2, 4])
def test_a_file_kernel_must_have_one_or_three_channels(tmp_path: Path, channels: int) -> None:
    np.save(tmp_path / "k.npy", np.ones((channels, 3, 3)))
    with pytest.raises(ConfigError, match=rf"kernel=.*C = 1 or 3.*\({channels}, 3, 3\)"):
        parse_task(f"kernel=file:{tmp_path / 'k.npy'}")


def test_file_kernels_of_one_and_three_channels_blur_rgb_images(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).random((3, 3, 5)) + 0.1
    np.save(tmp_path / "one.npy", rgb[:1])
    np.save(tmp_path / "three.npy", rgb)
    one = parse_task(f"kernel=file:{tmp_path / 'one.npy'}").kernel_tensor()
    assert one.shape == (3, 5)  # (1, kh, kw) is the kernel shared by all channels
    torch.testing.assert_close(one, torch.from_numpy(rgb[0] / rgb[0].sum()).float())
    three = parse_task(f"kernel=file:{tmp_path / 'three.npy'}")
    assert three.kernel_tensor().shape == (3, 3, 5)
    x = torch.rand(2, 3, 16, 16)
    for task in (parse_task(f"kernel=file:{tmp_path / 'one.npy'}"), three):
        assert task.operator()(x).shape == (2, 3, 16, 16)


def test_a_task_without_training_data_round_trips(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "a.png")
    for t in (parse_task(f"data={flat}"), parse_task(f"data={flat},op=sr:2"),
              Task("x", "disk:1.5", 0.0, val_data="natural:crops:64"),
              parse_task("train=none,val=natural:crops:32")):
        assert t.train_data is None
        assert "train=none" in t.to_spec()
        assert parse_task(t.to_spec()) == t
    assert parse_task(f"data={flat},train=natural:patches:16").train_data == "natural:patches:16"
    none = tmp_path / "none"
    none.mkdir()  # a folder called none is still reachable
    assert parse_task(f"train={none}").train_data == f"folder:{none}"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_registered_task_round_trips(name: str) -> None:
    t = TASKS[name]
    assert parse_task(t.to_spec()) == t


# ---------------------------------------------------------------------- parsed once
def test_a_task_holds_its_specs_parsed_and_compares_by_its_fields() -> None:
    from jfb.specs import DataSpec, KernelSpec, OpSpec

    t = get_task("celeba-sr4")
    assert t.op_spec == OpSpec("sr:4", "sr", (4, "gaussian")) and t.kernel_spec is None
    assert t.train_spec == DataSpec("celeba128:train", "celeba128", ("train",))
    assert t.val_spec == DataSpec("celeba128:val", "celeba128", ("val",))
    g = get_task("celeba-gauss5")
    assert g.kernel_spec == KernelSpec("gaussian:5:5.0", "gaussian", (5, 5.0))
    assert parse_task(g.to_spec()) == g and hash(parse_task(g.to_spec())) == hash(g)
    assert "op_spec" not in repr(g)


def test_a_file_kernel_is_read_once_when_the_task_is_parsed(tmp_path: Path) -> None:
    k = np.outer([1, 2, 1], [1, 0, 3]).astype(np.float64)
    path = tmp_path / "k.npy"
    np.save(path, k)
    task = parse_task(f"kernel=file:{path},noise=0")
    path.unlink()  # nothing reads it again: the kernel, the operator, another operator
    first = task.kernel_tensor()
    torch.testing.assert_close(first, torch.from_numpy(k / k.sum()).float())
    first.zero_()  # a copy: the task's kernel is not changed through it
    torch.testing.assert_close(task.operator().kernel, torch.from_numpy(k / k.sum()).float())
    with pytest.raises(ConfigError, match="kernel=.*not found"):
        parse_task(f"kernel=file:{path}")


def test_channels_live_below_every_layer() -> None:
    from jfb import constants, pipeline

    assert pipeline.CHANNELS is constants.CHANNELS == 3


def test_open_dataset_is_the_data_layers_and_takes_a_spec_or_its_text() -> None:
    from jfb.data import open_dataset
    from jfb.specs import parse_data
    from jfb.tasks import open_dataset as from_tasks

    assert from_tasks is open_dataset
    a = open_dataset("natural:crops:32", train=False)
    b = open_dataset(parse_data("natural:crops:32"), train=False)
    assert len(a) == len(b) and torch.equal(a[0], b[0]) and a[0].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="data.root"):
        open_dataset("natural:crops:32", train=False, root="/somewhere")


def test_a_run_parses_its_task_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build_run makes one Task; load_run (and load_model with noise=) one per checkpoint."""
    from jfb.config import load_config
    from jfb.pipeline import build_run, load_model, load_run
    from jfb.tasks import task as task_module
    from jfb.train.checkpoint import save_checkpoint

    flat = tmp_path / "flat"
    for s in ("train", "val"):
        (flat / s).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(flat / s / f"{i}.png")
    made = []
    post_init = task_module.Task.__post_init__
    monkeypatch.setattr(task_module.Task, "__post_init__",
                        lambda self: (made.append(self.name), post_init(self))[1])
    cfg = load_config(None, [f"task=data={flat},noise=0.01,name=mine", "model.kind=deadmm",
                             "model.net.depth=2", "model.net.width=4"])
    run = build_run(cfg)
    assert made == ["mine"] and run.task.name == "mine"
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model=run.model, step=0, config=cfg.to_dict(), rng=False)
    made.clear()
    loaded = load_run(path, noise=0.02)
    assert made == ["mine"] and loaded.task == run.task
    assert loaded.model.rho_factor == pytest.approx(4.0)
    made.clear()
    assert load_model(path, noise=0.02).model.rho_factor == pytest.approx(4.0)
    assert made == ["mine"]


def test_the_anyblur_family_draws_a_blur_and_a_noise_per_image() -> None:
    t = get_task("natural-anyblur")
    assert t.is_family and t.padding == "circular" and t.noise_sigma == 0.05
    with pytest.raises(ConfigError, match="physics"):
        t.operator()
    from jfb.tasks.degradations import RandomDegradations

    class Flat(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i))

    val = RandomDegradations(Flat(), max_kernel=15, max_noise=0.05, seed=3)
    first, again = val[2], val[2]
    assert torch.equal(first[1], again[1]) and torch.equal(first[2].op.kernel, again[2].op.kernel)
    sizes = {max(val[i][2].op.kernel_size) for i in range(6)}
    assert max(sizes) <= 15 and all(0 <= float(val[i][2].noise_std) <= 0.05 for i in range(6))
    x, y, physics = first
    torch.testing.assert_close(physics.op.A(x[None])[0], y, atol=0.3, rtol=0)  # noise only
    q = RandomDegradations(Flat(), bits=8, seed=3)[2]
    assert torch.equal(q[1], torch.round(q[1] * 255) / 255)
