"""Named full-reference image-quality metrics: ours (PSNR, SSIM) and those of libraries.

A metric spec names one of :data:`METRICS`, with an argument after a colon for some:

==============  =========================  ======================  ==========================
spec            what                       better, range           from
==============  =========================  ======================  ==========================
``psnr``        PSNR, dB                   higher, [0, inf)        :mod:`jfb.metrics`
``ssim``        SSIM (window 11, 1.5)      higher, [-1, 1]         :mod:`jfb.metrics`
``ms-ssim``     MS-SSIM, 5 scales          higher, [0, 1]          torchmetrics 1.9.0
``ms-ssim:K``   MS-SSIM, K < 5 scales      higher, [0, 1]          torchmetrics 1.9.0
``vif``         VIF-p, pixel domain        higher, [0, inf)        torchmetrics 1.9.0
``haarpsi``     HaarPSI                    higher, [0, 1]          piq 0.8.0
``gmsd``        GMSD                       lower, [0, 0.5]         piq 0.8.0
``fsim``        FSIM (FSIMc on colour)     higher, [0, 1]          piq 0.8.0
``lpips:PATH``  LPIPS, a network exported  lower, [0, inf)         the file PATH
``dists:PATH``  DISTS, likewise            lower, [0, 1]           the file PATH
==============  =========================  ======================  ==========================

Every metric takes a reconstruction and its reference, ``(N, C, H, W)`` in ``[0, 1]`` (the
caller clamps), and returns one value per image, ``(N,)``. Conventions, each the library's own
where it has one: MS-SSIM is torchmetrics' with data range 1, Wang et al.'s five scale weights
and its default ``normalize="relu"``; ``ms-ssim:K`` keeps the first K weights rescaled to sum 1
(for images too small for five scales: its values are not those of 5-scale MS-SSIM). VIF is
torchmetrics' VIF-p on the images times 255, because its visual-noise variance
``sigma_n^2 = 2`` is the original one for 8-bit values (what piq's ``vif_p`` does too). HaarPSI,
GMSD and FSIM are piq's with ``data_range=1`` and their defaults, FSIM chromatic on 3 channels.

piq 0.8.0 declares torchvision, and its package ``__init__`` imports torchvision for its
FID and LPIPS feature extractors, so ``import piq`` fails where no torchvision imports (no CPU
build of it matches this project's torch). HaarPSI, GMSD and FSIM are pure torch:
:func:`piq_module` loads their modules (and piq's ``utils`` and ``functional``) from the
installed package without running that ``__init__``. Install piq with
``pip install --no-deps piq==0.8.0``.

LPIPS and DISTS need a network's weights, which cannot be downloaded here, and torchmetrics'
and piq's networks are built on torchvision's AlexNet and VGG16, so they cannot be built
without it either. ``lpips:PATH`` and ``dists:PATH`` therefore load a whole network exported
with :func:`torch.export.save` (a ``.pt2`` file: graph and weights, no torchvision needed to run
it): a module ``(x, ref) -> (N,)`` on images in ``[0, 1]`` with 3 channels (a grey image is
repeated to 3). docs/questions/metrics.md shows how to export torchmetrics' networks where
torchvision and the weights are at hand. Load only files you trust.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import torch

from jfb import metrics
from jfb.errors import ConfigError, one_line

__all__ = ["DEFAULT", "METRICS", "Metric", "check_images", "parse_metrics", "piq_module"]

#: The metrics every evaluation reports (PROTOCOL.md); ``--metrics`` adds to them.
DEFAULT = ("psnr", "ssim")
#: The pinned versions the library metrics are tested with.
TORCHMETRICS_VERSION = "1.9.0"
PIQ_VERSION = "0.8.0"
#: Wang et al.'s (2003) MS-SSIM scale weights, finest scale first (torchmetrics' default).
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class Metric:
    """A named metric ``fn(x, ref) -> (N,)``, its direction and range, and where it comes from
    (``source``)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    higher_is_better: bool
    value_range: str
    source: str

    def __call__(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """One value per image of ``x`` against ``ref`` (both ``(N, C, H, W)``), shape ``(N,)``."""
        values = self.fn(x, ref)
        n = x.shape[0]
        if values.numel() != n:
            raise ValueError(f"metric {self.name!r} returned {values.numel()} values for {n} "
                             f"images (shape {tuple(values.shape)})")
        return values.detach().reshape(n)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def describe(self) -> str:
        """E.g. "vif (higher is better, [0, inf), torchmetrics 1.9.0)"."""
        return f"{self.name} ({self.direction}, {self.value_range}, {self.source})"


# ------------------------------------------------------------------------------- libraries
def _torchmetrics_image(name: str, metric: str = "") -> Callable:
    """The function ``name`` of ``torchmetrics.functional.image``; ConfigError naming the
    ``metric`` that needs it and the pip command when torchmetrics is missing."""
    try:
        module = importlib.import_module("torchmetrics.functional.image")
    except ImportError as exc:
        raise ConfigError(f"metric {metric!r} needs torchmetrics ({one_line(exc)}): pip install "
                          f"torchmetrics=={TORCHMETRICS_VERSION}") from None
    return getattr(module, name)


def piq_module(name: str) -> types.ModuleType:
    """piq's module ``piq.<name>`` (e.g. "haarpsi"), loaded without piq's package ``__init__``
    (which imports torchvision) unless piq is already imported; ConfigError naming the metric
    ``name`` and the pip command when piq 0.8.0 is not installed. ``sys.modules`` is left as it
    was: a later ``import piq`` runs piq's own ``__init__``."""
    if "piq" in sys.modules:  # imported already (its __init__ ran): use it as it is
        return importlib.import_module(f"piq.{name}")
    try:
        return _piq_modules()[name]
    except ConfigError as exc:
        raise ConfigError(f"metric {name.replace('_', '-')!r} {exc}") from None


def _piq_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("piq")
    except PackageNotFoundError:
        return None


@cache
def _piq_modules() -> dict[str, types.ModuleType]:
    """piq's haarpsi, gmsd, fsim, vif and ms_ssim modules, imported under a bare ``piq`` package
    (its directory, its ``__init__`` not run) that is taken out of ``sys.modules`` afterwards."""
    how = f"pip install --no-deps piq=={PIQ_VERSION}"
    found = _piq_version()
    spec = importlib.util.find_spec("piq")
    if spec is None or spec.submodule_search_locations is None or found is None:
        raise ConfigError(f"needs piq {PIQ_VERSION}, not installed: {how} (--no-deps: its "
                          "torchvision requirement is not needed for these metrics)")
    if found != PIQ_VERSION:
        raise ConfigError(f"needs piq {PIQ_VERSION} (the version tested), found {found}: "
                          f"{how}")
    bare = types.ModuleType("piq")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    before = set(sys.modules)
    sys.modules["piq"] = bare
    try:
        return {name: importlib.import_module(f"piq.{name}")
                for name in ("haarpsi", "gmsd", "fsim", "vif", "ms_ssim")}
    finally:
        for key in set(sys.modules) - before:
            if key == "piq" or key.startswith("piq."):
                del sys.modules[key]


# --------------------------------------------------------------------------------- metrics
def _ms_ssim(x: torch.Tensor, ref: torch.Tensor, *, betas: tuple[float, ...]) -> torch.Tensor:
    """prod_j cs_j^beta_j * l_M^beta_M over the scales (torchmetrics)."""
    fn = _torchmetrics_image("multiscale_structural_similarity_index_measure")
    return fn(x, ref, data_range=1.0, reduction="none", betas=betas)


def _vif(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """sum_j log(1 + g^2 s_r^2 / (s_v^2 + s_n^2)) / sum_j log(1 + s_r^2 / s_n^2) (torchmetrics,
    values times 255 for its s_n^2 = 2)."""
    fn = _torchmetrics_image("visual_information_fidelity")
    return fn(255.0 * x, 255.0 * ref, reduction="none")


def _haarpsi(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Haar-wavelet similarity maps weighted by low-frequency magnitude, logit-averaged (piq)."""
    return piq_module("haarpsi").haarpsi(x, ref, reduction="none", data_range=1.0)


def _gmsd(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the gradient-magnitude similarity map (piq)."""
    return piq_module("gmsd").gmsd(x, ref, reduction="none", data_range=1.0)


def _fsim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Phase-congruency-weighted mean of phase and gradient similarity (piq; FSIMc on RGB)."""
    return piq_module("fsim").fsim(x, ref, reduction="none", data_range=1.0,
                                   chromatic=x.shape[1] == 3)


def _no_argument(name: str, arg: str | None) -> None:
    if arg is not None:
        raise ConfigError(f"metric {name!r} takes no argument, got {name}:{arg}")


def _protocol(name: str, arg: str | None) -> Metric:
    _no_argument(name, arg)
    if name == "psnr":
        return Metric("psnr", metrics.psnr, True, "[0, inf) dB", "jfb.metrics")
    return Metric("ssim", metrics.ssim, True, "[-1, 1]", "jfb.metrics")


def _ms_ssim_metric(name: str, arg: str | None) -> Metric:
    if arg is None:
        betas = MS_SSIM_BETAS
    else:
        if arg not in ("1", "2", "3", "4"):
            raise ConfigError(f"metric {name}:{arg}: expected ms-ssim (5 scales) or ms-ssim:K "
                              "with K = 1, 2, 3 or 4 scales")
        first = MS_SSIM_BETAS[: int(arg)]
        betas = tuple(b / sum(first) for b in first)
    _torchmetrics_image("multiscale_structural_similarity_index_measure", name)  # present?
    label = name if arg is None else f"{name}:{arg}"
    return Metric(label, partial(_ms_ssim, betas=betas), True, "[0, 1]",
                  f"torchmetrics {TORCHMETRICS_VERSION}")


def _library(name: str, arg: str | None) -> Metric:
    _no_argument(name, arg)
    if name == "vif":
        _torchmetrics_image("visual_information_fidelity", name)
        return Metric("vif", _vif, True, "[0, inf), 1 for identical images",
                      f"torchmetrics {TORCHMETRICS_VERSION}")
    fn, higher, span = {"haarpsi": (_haarpsi, True, "[0, 1]"),
                        "gmsd": (_gmsd, False, "[0, 0.5]"),
                        "fsim": (_fsim, True, "[0, 1]")}[name]
    piq_module(name)  # installed?
    return Metric(name, fn, higher, span, f"piq {PIQ_VERSION}")


def _learned(name: str, arg: str | None) -> Metric:
    """LPIPS or DISTS: the network exported to the .pt2 file ``arg`` (see the module doc)."""
    how = (f"{name}:PATH with PATH a network exported by torch.export.save (.pt2), (x, ref) in "
           "[0, 1] -> one value per image; the libraries' own networks need torchvision, and "
           "their weights cannot be downloaded (docs/questions/metrics.md)")
    if not arg:
        raise ConfigError(f"metric {name!r} needs its network: {how}")
    path = Path(arg)
    if not path.is_file():
        raise ConfigError(f"metric {name!r}: no file {path}")
    if path.suffix != ".pt2" or not _is_export_archive(path):
        raise ConfigError(f"metric {name!r}: {path} is not a torch.export archive: expected {how}")
    try:
        net = torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 - any failure to read the archive is the file's
        raise ConfigError(f"metric {name!r}: cannot load {path}: {one_line(exc)}") from None
    span = "[0, inf)" if name == "lpips" else "[0, 1]"
    return Metric(name, partial(_run_network, name, path, net), False, span, f"file {path}")


def _is_export_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive written by :func:`torch.export.save`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("archive_format") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _run_network(name: str, path: Path, net: Callable, x: torch.Tensor,
                 ref: torch.Tensor) -> torch.Tensor:
    """The exported network on (x, ref), grey images repeated to 3 channels; its refusals (the
    shape guards of an exported graph raise AssertionError) as ValueError naming the file."""
    if x.shape[1] == 1:
        x, ref = x.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
    try:
        return net(x, ref)
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise ValueError(f"metric {name!r}: the network of {path} refused images of shape "
                         f"{tuple(x.shape)}: {one_line(exc)}") from None


#: Metric names and the builder of each (name, argument after the colon or None) -> Metric.
METRICS: dict[str, Callable[[str, str | None], Metric]] = {
    "psnr": _protocol,
    "ssim": _protocol,
    "ms-ssim": _ms_ssim_metric,
    "vif": _library,
    "haarpsi": _library,
    "gmsd": _library,
    "fsim": _library,
    "lpips": _learned,
    "dists": _learned,
}


def parse_metrics(specs: str | Iterable[str] | None) -> list[Metric]:
    """The metrics of ``specs`` ("psnr,ssim,vif,lpips:net.pt2" or a list of specs) after
    :data:`DEFAULT`'s, each once, in order; ConfigError for an unknown or repeated name, a
    wrong argument, a missing package (naming its pip command) or an unusable network file."""
    items = specs.split(",") if isinstance(specs, str) else list(specs or ())
    out: list[Metric] = []
    for spec in (*DEFAULT, *(s.strip() for s in items if s.strip())):
        name, sep, arg = spec.partition(":")
        name = name.strip().lower()
        if name not in METRICS:
            raise ConfigError(f"unknown metric {spec!r}: expected a comma-separated list of "
                              f"{', '.join(METRICS)} (lpips and dists as lpips:PATH)")
        metric = METRICS[name](name, arg.strip() if sep else None)
        if any(m.name == metric.name for m in out):
            if name in DEFAULT and spec == name:
                continue  # psnr and ssim are always reported: naming them again is fine
            raise ConfigError(f"metric {metric.name!r} is listed twice")
        out.append(metric)
    return out


def check_images(metric_list: Sequence[Metric], shape: Sequence[int]) -> None:
    """Refuse, before any work, a metric that cannot score images of ``shape`` (C, H, W): each
    is run once on a pair of constant images of that shape, so the size and channel rules are
    the libraries' own. ConfigError naming the metric (for MS-SSIM, how many scales fit)."""
    c, h, w = (int(s) for s in shape)
    a = torch.full((1, c, h, w), 0.25)
    b = torch.full((1, c, h, w), 0.5)
    for m in metric_list:
        try:
            with torch.no_grad():
                m(a, b)
        except (ValueError, RuntimeError, AssertionError) as exc:
            hint = ""
            if m.name.startswith("ms-ssim"):
                fits = [k for k in "4321" if _fits(k, a, b)]
                hint = (f"; ms-ssim:{fits[0]} ({fits[0]} scales) fits these images" if fits
                        else "")
            raise ConfigError(f"metric {m.name!r} cannot score images of {c}x{h}x{w}: "
                              f"{one_line(exc).rstrip('.')}{hint}") from None


def _fits(scales: str, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether MS-SSIM with ``scales`` scales scores the pair (a, b)."""
    try:
        _ms_ssim_metric("ms-ssim", scales)(a, b)
    except (ValueError, RuntimeError):
        return False
    return True
