"""`--metrics` (jfb.quality): every library metric against the library's own function called on
the same tensors, VIF and MS-SSIM also against a second library, the size rules of MS-SSIM, the
one-line errors, LPIPS from an exported stand-in network, and the options of `jfb eval` and
`jfb compare`.

The photos are crops of scikit-image's astronaut and camera (smooth regions and edges: every
metric is well conditioned there), degraded by blur and noise of fixed seeds.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data as skdata

from jfb import quality
from jfb.cli import main
from jfb.cli_parsers import METRICS_HELP
from jfb.compare import Row
from jfb.compare_report import ranking_notes, rankings
from jfb.errors import ConfigError
from jfb.evaluate import EvalResult
from jfb.quality import METRICS, check_images, parse_metrics

needs_piq = pytest.mark.skipif(find_spec("piq") is None,
                               reason="piq not installed (pip install --no-deps piq==0.8.0)")
DEFAULT_MODEL = "src/jfb/weights/faces.safetensors"
#: A small blur task on 64-px crops of the built-in photos (cheap; MS-SSIM needs ms-ssim:3).
TASK = ("op=blur,kernel=gaussian:5:1.0,padding=zeros,noise=0.01,train=natural:patches:32,"
        "val=natural:crops:64,name=b")


def _photos(size: int, grey: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean): 2 crops of ``size`` px, float32 in [0, 1]; the first blurred (sigma
    1.2) with noise 0.02, the second blurred more (sigma 2.5) with noise 0.01."""
    a = skdata.camera() if grey else skdata.astronaut()
    a = a.astype(np.float64) / 255.0
    crops = [a[40 : 40 + size, 180 : 180 + size], a[200 : 200 + size, 100 : 100 + size]]
    rng = np.random.default_rng(0)
    clean, bad = [], []
    for c, (sigma, noise) in zip(crops, ((1.2, 0.02), (2.5, 0.01)), strict=True):
        s = sigma if grey else (sigma, sigma, 0)
        b = np.clip(gaussian_filter(c, s) + noise * rng.standard_normal(c.shape), 0.0, 1.0)
        clean.append(c)
        bad.append(b)

    def t(arrays):
        x = torch.from_numpy(np.stack(arrays)).float()
        return x[:, None] if grey else x.permute(0, 3, 1, 2).contiguous()

    return t(bad), t(clean)


def _one(spec: str) -> quality.Metric:
    return parse_metrics(spec)[-1]


def _tm(name: str):
    import torchmetrics.functional.image as tmi

    return getattr(tmi, name)


# ------------------------------------------------------------ against the libraries themselves
def test_ms_ssim_and_vif_are_torchmetrics_on_the_same_tensors():
    y, x = _photos(192)
    ms = _tm("multiscale_structural_similarity_index_measure")(y, x, data_range=1.0,
                                                                reduction="none")
    torch.testing.assert_close(_one("ms-ssim")(y, x), ms, rtol=1e-6, atol=0)
    vif = _tm("visual_information_fidelity")(255 * y, 255 * x, reduction="none")
    torch.testing.assert_close(_one("vif")(y, x), vif, rtol=1e-6, atol=0)
    # ms-ssim:K: torchmetrics with Wang's first K weights rescaled to sum 1
    betas = tuple(b / sum(quality.MS_SSIM_BETAS[:3]) for b in quality.MS_SSIM_BETAS[:3])
    ms3 = _tm("multiscale_structural_similarity_index_measure")(y, x, data_range=1.0,
                                                                reduction="none", betas=betas)
    torch.testing.assert_close(_one("ms-ssim:3")(y, x), ms3, rtol=1e-6, atol=0)
    assert abs(sum(betas) - 1.0) < 1e-12
    assert not torch.allclose(ms3, ms, atol=1e-3)  # not the 5-scale values


@needs_piq
@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
def test_haarpsi_gmsd_fsim_are_piq_on_the_same_tensors(grey):
    y, x = _photos(128, grey=grey)
    haarpsi = quality.piq_module("haarpsi").haarpsi(y, x, reduction="none")
    gmsd = quality.piq_module("gmsd").gmsd(y, x, reduction="none")
    fsim = quality.piq_module("fsim").fsim(y, x, reduction="none", chromatic=not grey)
    for spec, ref in (("haarpsi", haarpsi), ("gmsd", gmsd), ("fsim", fsim)):
        torch.testing.assert_close(_one(spec)(y, x), ref, rtol=1e-6, atol=0)
        assert ref.shape == (2,) and torch.isfinite(ref).all()


@needs_piq
def test_vif_on_0_255_is_piq_vif_p_an_independent_implementation():
    """On grey images piq's VIF-p (which rescales [0, 1] to [0, 255] itself) and torchmetrics'
    VIF on 255 x agree: the 255 of :mod:`jfb.quality` is the convention of both. On [0, 1]
    values torchmetrics' sigma_n^2 = 2 would swamp the signal (a different number)."""
    y, x = _photos(128, grey=True)
    ours = _one("vif")(y, x)
    piq_vif = quality.piq_module("vif").vif_p(y, x, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, piq_vif, rtol=1e-4, atol=1e-5)
    raw = _tm("visual_information_fidelity")(y, x, reduction="none")
    assert (raw - ours).abs().min() > 0.05


@needs_piq
def test_ms_ssim_agrees_with_piq_multi_scale_ssim():
    y, x = _photos(192)
    piq_ms = quality.piq_module("ms_ssim").multi_scale_ssim(y, x, data_range=1.0,
                                                           reduction="none")
    torch.testing.assert_close(_one("ms-ssim")(y, x), piq_ms, rtol=0, atol=1e-3)


@needs_piq
def test_identical_images_score_best_and_directions_are_right():
    """x against itself is the best value of each metric; the more blurred crop of the same
    photo (blur 2.5 against 1.2) scores worse by every metric, in its own direction."""
    _, x = _photos(192)
    y2 = torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, 2.5, 2.5))).clamp(0, 1)
    y1 = torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, 1.2, 1.2))).clamp(0, 1)
    best = {"ms-ssim": 1.0, "vif": 1.0, "haarpsi": 1.0, "fsim": 1.0, "gmsd": 0.0}
    for spec, value in best.items():
        m = _one(spec)
        torch.testing.assert_close(m(x, x), torch.full((2,), value), rtol=0, atol=1e-4)
        sign = 1.0 if m.higher_is_better else -1.0
        assert (sign * (m(y1, x) - m(y2, x)) > 0).all(), spec


# --------------------------------------------------------------------- sizes, names, packages
@pytest.mark.parametrize("scales,smallest", [("", 176), (":4", 99), (":3", 44)])
def test_ms_ssim_image_sizes_are_torchmetrics_own_rule(scales, smallest):
    """5 scales need 176-px images (torchmetrics' message says 'larger than 160', its test
    H // 16 > 10), 4 scales 99 px, 3 scales 44 px: refused below, before any work."""
    metric = parse_metrics(f"ms-ssim{scales}")
    check_images(metric, (3, smallest, smallest))
    with pytest.raises(ConfigError, match=r"metric 'ms-ssim.*cannot score images of 3x"):
        check_images(metric, (3, smallest - 1, smallest))
    k = int(scales[1:] or 5)
    betas = quality.MS_SSIM_BETAS[:k]
    f = _tm("multiscale_structural_similarity_index_measure")
    z = torch.full((1, 3, smallest - 1, smallest - 1), 0.5)
    with pytest.raises(ValueError):  # the library itself refuses
        f(z, z, data_range=1.0, betas=betas)


def test_ms_ssim_on_64_px_crops_says_which_scales_fit():
    with pytest.raises(ConfigError, match=r"ms-ssim:3 \(3 scales\) fits these images"):
        check_images(parse_metrics("ms-ssim"), (3, 64, 64))
    check_images(parse_metrics("ms-ssim:3,vif"), (3, 64, 64))
    with pytest.raises(ConfigError, match="'vif' cannot score images of 3x40x64"):
        check_images(parse_metrics("vif"), (3, 40, 64))


@pytest.mark.parametrize("spec,needle", [
    ("psnr,bogus", "unknown metric 'bogus'"),
    ("vif,vif", "'vif' is listed twice"),
    ("vif:2", "takes no argument"),
    ("ms-ssim:5", "K = 1, 2, 3 or 4"),
    ("lpips", "lpips:PATH"),
    ("dists:/no/such/net.pt2", "no file"),
])
def test_bad_metric_specs_are_config_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_metrics(spec)


def test_default_is_psnr_and_ssim_and_names_are_kept_in_order():
    assert [m.name for m in parse_metrics(None)] == ["psnr", "ssim"]
    assert [m.name for m in parse_metrics("ssim, vif ,psnr,ms-ssim:3")] == [
        "psnr", "ssim", "vif", "ms-ssim:3"]


def test_every_metric_is_in_the_help_of_the_option():
    for name in METRICS:
        assert name in METRICS_HELP


def test_a_missing_package_is_one_line_naming_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)
    tm = r"'vif' needs torchmetrics .*: pip install torchmetrics==1\.9\.0"
    with pytest.raises(ConfigError, match=tm):
        parse_metrics("vif")
    monkeypatch.setattr(quality, "_piq_version", lambda: None)
    monkeypatch.delitem(sys.modules, "piq", raising=False)
    quality._piq_modules.cache_clear()
    try:
        how = r"'haarpsi' needs piq 0\.8\.0, not installed: pip install --no-deps piq==0\.8\.0"
        with pytest.raises(ConfigError, match=how):
            parse_metrics("haarpsi")
        monkeypatch.setattr(quality, "_piq_version", lambda: "0.7.1")
        with pytest.raises(ConfigError, match=r"found 0\.7\.1"):
            parse_metrics("fsim")
    finally:
        quality._piq_modules.cache_clear()


@needs_piq
def test_piq_loads_without_its_init_and_leaves_sys_modules_alone():
    """In a fresh interpreter: piq's metrics load, no ``piq`` module stays behind, torchvision
    is never imported; and where torchvision is missing, ``import piq`` itself fails on it
    (the reason for the loader)."""
    script = (
        "import sys\n"
        "from jfb.quality import parse_metrics\n"
        "parse_metrics('haarpsi,gmsd,fsim')\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('piq', 'torchvision')))\n"
        "try:\n"
        "    import torchvision  # noqa\n"
        "    print('torchvision imports')\n"
        "except Exception:\n"
        "    try:\n"
        "        import piq  # noqa\n"
        "        print('piq imports without torchvision')\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print(f'import piq fails on {exc.name}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    assert lines[0] == "[]"
    assert lines[1] in ("torchvision imports", "import piq fails on torchvision")


# ------------------------------------------------------------ LPIPS / DISTS from a user's file
class _StandIn(torch.nn.Module):
    """A tiny LPIPS-like network: one fixed conv layer, unit-normalised features, mean squared
    difference per image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(2 * x - 1), self.conv(2 * ref - 1)
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        return (a - b).pow(2).sum(dim=1).mean(dim=(1, 2))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """The stand-in network exported with torch.export (dynamic batch and size), and itself."""
    from torch.export import Dim

    net = _StandIn().eval()
    n, h, w = Dim("n"), Dim("h", min=8), Dim("w", min=8)
    shapes = ({0: n, 2: h, 3: w}, {0: n, 2: h, 3: w})
    example = (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    path = tmp_path_factory.mktemp("net") / "lpips-stand-in.pt2"
    torch.export.save(torch.export.export(net, example, dynamic_shapes=shapes), str(path))
    return path, net


def test_lpips_and_dists_from_an_exported_network(stand_in, tmp_path):
    path, net = stand_in
    y, x = _photos(64)
    lpips = _one(f"lpips:{path}")
    assert not lpips.higher_is_better and lpips.name == "lpips"
    with torch.no_grad():
        torch.testing.assert_close(lpips(y, x), net(y, x), rtol=1e-5, atol=1e-7)
        yg, xg = _photos(64, grey=True)  # grey: repeated to 3 channels
        torch.testing.assert_close(_one(f"dists:{path}")(yg, xg),
                                   net(yg.expand(-1, 3, -1, -1), xg.expand(-1, 3, -1, -1)),
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="cannot score images of 3x4x4"):
        check_images([lpips], (3, 4, 4))  # the exported graph's own size guard
    state = tmp_path / "lpips.pt2"
    torch.save(net.state_dict(), state)  # a state_dict is not a network
    with pytest.raises(ConfigError, match="not a torch.export archive"):
        parse_metrics(f"lpips:{state}")


# ----------------------------------------------------------------------- the command's options
def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_reports_the_metrics_asked_for(stand_in, capsys, tmp_path):
    path, _ = stand_in
    out = tmp_path / "ev"
    argv = ["eval", DEFAULT_MODEL, "--task", TASK, "--max-images", "2", "--device", "cpu",
            "--out", str(out), "--quiet"]
    assert _run([*argv, "--metrics", f"ms-ssim:3,vif,lpips:{path}"], capsys)[0] == 0
    row = json.loads((out / "results.json").read_text())
    with (out / "per_image.csv").open() as f:
        per_image = list(csv.DictReader(f))
    for name in ("ms-ssim:3", "vif", "lpips"):
        values = [float(r[name]) for r in per_image]
        assert row[name] == pytest.approx(np.mean(values), abs=1e-5)
        assert f"| {name} | {name}_std |" in (out / "results.md").read_text()
    assert 0 < row["vif"] < 1 and 0 < row["ms-ssim:3"] <= 1 and row["lpips"] >= 0
    assert _run(argv, capsys)[0] == 0  # default: PSNR and SSIM only, as before
    assert "vif" not in json.loads((out / "results.json").read_text())
    code, _, err = _run([*argv, "--metrics", "psnr,bogus"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown metric 'bogus'" in err
    code, _, err = _run([*argv, "--metrics", "ms-ssim"], capsys)
    assert code == 2 and err.count("\n") == 1 and "ms-ssim:3" in err


@needs_piq
def test_compare_scores_every_row_by_the_library_on_the_same_images(capsys, tmp_path):
    """`--methods input` reconstructs x by y itself (a blur keeps the size): its row must be
    the libraries' own values on (clamp(y), x) over the evaluation pairs, and the ranking
    against PSNR's is written."""
    from jfb.pipeline import EVAL_SEED
    from jfb.tasks import parse_task

    out = tmp_path / "cmp"
    code, stdout, err = _run(["compare", "--task", TASK, "--methods", "input,input",
                              "--max-images", "3", "--device", "cpu", "--out", str(out),
                              "--quiet", "--metrics", "vif,haarpsi,gmsd,fsim,ms-ssim:3"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    pairs = parse_task(TASK).val_pairs(seed=EVAL_SEED, limit=3)
    x = torch.stack([pairs[i][0] for i in range(3)])
    y = torch.stack([pairs[i][1] for i in range(3)]).clamp(0, 1)
    piq = {n: getattr(quality.piq_module(n), n) for n in ("haarpsi", "gmsd", "fsim")}
    expect = {
        "vif": _tm("visual_information_fidelity")(255 * y, 255 * x, reduction="none"),
        "haarpsi": piq["haarpsi"](y, x, reduction="none"),
        "gmsd": piq["gmsd"](y, x, reduction="none"),
        "fsim": piq["fsim"](y, x, reduction="none"),
    }
    for row in res["rows"]:
        for name, values in expect.items():
            assert row[name] == pytest.approx(float(values.double().mean()), abs=2e-5), name
    assert res["metrics"]["gmsd"]["higher_is_better"] is False
    assert set(res["rankings"]) == {"psnr", "ssim", "vif", "haarpsi", "gmsd", "fsim",
                                    "ms-ssim:3"}
    md = (out / "results.md").read_text()
    assert "| vif | vif_std |" in md and "rank the methods as PSNR does" in md
    assert "rank the methods as PSNR does" in stdout


def _row(name: str, psnr: float, vif: float, gmsd: float) -> Row:
    one = torch.ones(1, dtype=torch.float64)
    result = EvalResult(name, psnr * one, 0.5 * one, 0.0,
                        scores={"vif": vif * one, "gmsd": gmsd * one})
    return Row(result, {}, name)


def test_a_ranking_that_differs_from_psnr_is_said():
    rows = [_row("a", 30.0, 0.4, 0.05), _row("b", 31.0, 0.5, 0.06), _row("c", 29.0, 0.3, 0.04)]
    orders = rankings(rows, parse_metrics("vif,gmsd"))
    assert orders["psnr"] == [["b"], ["a"], ["c"]] and orders["vif"] == orders["psnr"]
    assert orders["gmsd"] == [["c"], ["a"], ["b"]]  # lower is better
    assert orders["ssim"] == [["a", "b", "c"]]  # a tie is no difference
    assert ranking_notes(orders) == [
        "ranking by gmsd differs from PSNR's: psnr: b > a > c; gmsd: c > a > b"]
    same = rankings(rows, parse_metrics("vif"))
    assert ranking_notes(same) == ["ssim, vif rank the methods as PSNR does: b > a > c"]
    assert ranking_notes(rankings(rows[:1], parse_metrics("vif"))) == []
