"""Prior fusion methods: classical fusers whose outputs are pseudo-label candidates.

Every built-in prior is a function ``fuse(image_a, image_b) -> fused_y`` on batched tensors:
images (B, C, H, W) in [0, 1] with C = 1 or 3, result the fused luminance (B, 1, H, W) in [0, 1].
:func:`run_prior` puts colour back with the task's policy (docs/design.md, "Colour").
:class:`ExternalPriors` reads other methods' fused images from ``priors/<METHOD>/<stem>.*`` folders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pywt
import torch
from kornia.filters import box_blur, gaussian_blur2d, guided_blur, laplacian, median_blur

from .color import luminance, recombine
from .image_processor import FusionImageProcessor
from .pyramid import collapse, gaussian_pyramid, laplacian_pyramid, pyramid_levels
from .stacks import WELL_EXPOSED_SIGMA
from .tasks import FAMILIES, FusionTask, get_task

Fuser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prior:
    """A prior fusion method and the task families it suits."""

    name: str
    fuse: Fuser
    families: tuple[str, ...]
    description: str


# ---------------------------------------------------------------- building blocks
def _choose_max_abs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() >= y.abs(), x, y)


# ---------------------------------------------------------------- the priors (luminance out)
def average(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Pixel mean of the two luminances."""
    return (luminance(image_a) + luminance(image_b)) / 2


def choose_max(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Pixel maximum of the two luminances (bright structures of both survive)."""
    return torch.maximum(luminance(image_a), luminance(image_b))


def laplacian_pyramid_fusion(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Laplacian pyramid: max-abs detail coefficients, averaged base."""
    y_a, y_b = luminance(image_a), luminance(image_b)
    levels = pyramid_levels(*y_a.shape[-2:])
    pyramid_a, pyramid_b = laplacian_pyramid(y_a, levels), laplacian_pyramid(y_b, levels)
    fused = [_choose_max_abs(la, lb) for la, lb in zip(pyramid_a[:-1], pyramid_b[:-1], strict=True)]
    fused.append((pyramid_a[-1] + pyramid_b[-1]) / 2)
    return collapse(fused).clamp(0, 1)


def wavelet_fusion(image_a: torch.Tensor, image_b: torch.Tensor, wavelet: str = "db2", levels: int = 3) -> torch.Tensor:
    """Discrete wavelet transform (PyWavelets): max-abs detail coefficients, averaged approximation."""
    y_a, y_b = luminance(image_a), luminance(image_b)
    height, width = y_a.shape[-2:]
    levels = min(levels, pywt.dwt_max_level(min(height, width), pywt.Wavelet(wavelet).dec_len))
    results = []
    for a, b in zip(y_a[:, 0].double().numpy(), y_b[:, 0].double().numpy(), strict=True):
        coeffs_a = pywt.wavedec2(a, wavelet, level=max(levels, 1), mode="symmetric")
        coeffs_b = pywt.wavedec2(b, wavelet, level=max(levels, 1), mode="symmetric")
        fused = [(coeffs_a[0] + coeffs_b[0]) / 2]
        for details_a, details_b in zip(coeffs_a[1:], coeffs_b[1:], strict=True):
            fused.append(tuple(np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(details_a, details_b,
                                                                                             strict=True)))
        results.append(pywt.waverec2(fused, wavelet, mode="symmetric")[:height, :width])
    return torch.from_numpy(np.stack(results)).float()[:, None].clamp(0, 1)


def guided_filter_fusion(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """GFF (Li, Kang and Hu, 2013): two-scale split, Laplacian saliency, weights refined by guided filters."""
    y_a, y_b = luminance(image_a), luminance(image_b)
    base_a, base_b = box_blur(y_a, 31, border_type="replicate"), box_blur(y_b, 31, border_type="replicate")
    saliency = [gaussian_blur2d(laplacian(y, 3, border_type="replicate").abs(), (11, 11), (5.0, 5.0),
                                border_type="replicate") for y in (y_a, y_b)]
    winner_a = (saliency[0] >= saliency[1]).float()
    weights = []
    for radius, eps in ((45, 0.3), (7, 1e-6)):  # base weights: smooth; detail weights: edge-aware
        w_a = guided_blur(y_a, winner_a, 2 * radius + 1, eps, border_type="replicate", separable=True)
        w_b = guided_blur(y_b, 1 - winner_a, 2 * radius + 1, eps, border_type="replicate", separable=True)
        total = (w_a + w_b).clamp_min(1e-6)
        weights.append((w_a / total, w_b / total))
    (wb_a, wb_b), (wd_a, wd_b) = weights
    fused = wb_a * base_a + wb_b * base_b + wd_a * (y_a - base_a) + wd_b * (y_b - base_b)
    return fused.clamp(0, 1)


def exposure_fusion(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Mertens-style exposure fusion of a pair: :func:`exposure_fusion_frames` of the two."""
    return exposure_fusion_frames([image_a, image_b])


def exposure_fusion_frames(frames: list[torch.Tensor]) -> torch.Tensor:
    """Mertens-style exposure fusion of any number of frames (1, C, H, W): contrast x saturation x
    well-exposedness weights, normalised over the frames and blended in a Laplacian pyramid. Weights are
    computed from the colour images; the luminance is blended. Returns (1, 1, H, W)."""
    weights = []
    for image in frames:
        y = luminance(image)
        contrast = laplacian(y, 3, border_type="replicate").abs()
        saturation = image.std(dim=1, keepdim=True, correction=0) if image.shape[1] == 3 else torch.ones_like(y)
        well_exposed = torch.exp(-((image - 0.5) ** 2) / (2 * WELL_EXPOSED_SIGMA**2)).prod(dim=1, keepdim=True)
        weights.append(contrast * saturation * well_exposed + 1e-12)
    total = torch.stack(weights).sum(dim=0)
    levels = pyramid_levels(*frames[0].shape[-2:])
    fused = None
    for image, weight in zip(frames, weights, strict=True):
        pyramid = laplacian_pyramid(luminance(image), levels)
        contribution = [w * band for w, band in zip(gaussian_pyramid(weight / total, levels), pyramid, strict=True)]
        fused = contribution if fused is None else [f + c for f, c in zip(fused, contribution, strict=True)]
    return collapse(fused).clamp(0, 1)


def focus_map_fusion(image_a: torch.Tensor, image_b: torch.Tensor, focus_window: int = 9, majority_window: int = 15,
                     guided_radius: int = 4) -> torch.Tensor:
    """Multi-focus fusion: energy-of-Laplacian focus measure (summed over ``focus_window`` pixels), a
    decision map majority-filtered over ``majority_window`` pixels, refined by a guided filter of radius
    ``guided_radius``, then a per-pixel blend of the sources."""
    y_a, y_b = luminance(image_a), luminance(image_b)
    focus = [box_blur(laplacian(y, 3, border_type="replicate") ** 2, focus_window, border_type="replicate")
             for y in (y_a, y_b)]
    decision = (focus[0] >= focus[1]).float()
    decision = (box_blur(decision, majority_window, border_type="replicate") > 0.5).float()  # remove speckle
    guide = (y_a + y_b) / 2
    weight_a = guided_blur(guide, decision, 2 * guided_radius + 1, 0.01, border_type="replicate",
                           separable=True).clamp(0, 1)
    return (weight_a * y_a + (1 - weight_a) * y_b).clamp(0, 1)


def two_scale_saliency_fusion(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Two-scale fusion with visual saliency (Bavirisetti and Dhuli, 2016): mean-filter base layers are
    averaged; detail layers are weighted by |mean - median| saliency."""
    y_a, y_b = luminance(image_a), luminance(image_b)
    base_a, base_b = box_blur(y_a, 35, border_type="replicate"), box_blur(y_b, 35, border_type="replicate")
    saliency_a = (base_a - median_blur(y_a, 3)).abs()
    saliency_b = (base_b - median_blur(y_b, 3)).abs()
    total = saliency_a + saliency_b
    weight_a = torch.where(total > 1e-8, saliency_a / total.clamp_min(1e-8), torch.full_like(total, 0.5))
    fused = (base_a + base_b) / 2 + weight_a * (y_a - base_a) + (1 - weight_a) * (y_b - base_b)
    return fused.clamp(0, 1)


PRIORS: dict[str, Prior] = {
    prior.name: prior
    for prior in (
        Prior("average", average, FAMILIES, "pixel mean"),
        Prior("max", choose_max, ("IVF", "MIF"), "pixel maximum"),
        Prior("laplacian", laplacian_pyramid_fusion, FAMILIES, "Laplacian pyramid, max-abs details"),
        Prior("wavelet", wavelet_fusion, FAMILIES, "db2 DWT, 3 levels, max-abs details"),
        Prior("gff", guided_filter_fusion, FAMILIES, "guided-filter fusion (Li et al. 2013)"),
        Prior("exposure", exposure_fusion, ("MEF",), "Mertens-style exposure fusion"),
        Prior("focus_map", focus_map_fusion, ("MFF",), "focus-measure decision map + guided filter"),
        Prior("two_scale_saliency", two_scale_saliency_fusion, ("IVF", "MIF"), "two-scale visual saliency"),
    )
}


def priors_for(task: str | FusionTask) -> list[Prior]:
    """The built-in priors that suit a task's family."""
    family = get_task(task).family
    return [prior for prior in PRIORS.values() if family in prior.families]


def run_prior(name: str, image_a: torch.Tensor, image_b: torch.Tensor, task: str | FusionTask) -> torch.Tensor:
    """Fuse with a built-in prior and put colour back per the task: (B, C, H, W) -> (B, 1 or 3, H, W)."""
    if name not in PRIORS:
        raise ValueError(f"Unknown prior {name!r}. Known priors: {', '.join(PRIORS)}.")
    fused_y = PRIORS[name].fuse(image_a, image_b)
    return recombine(fused_y, image_a, image_b, get_task(task).color_policy)


class ExternalPriors:
    """Fused images of other methods stored as ``<dataset>/priors/<METHOD>/<stem>.<ext>``.

    Args:
        dataset_dir: a dataset folder in the layout of ``shared/data`` (e.g. ``IVF/VIFB``).
    """

    def __init__(self, dataset_dir: str | Path) -> None:
        self.root = Path(dataset_dir) / "priors"
        self.methods = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        self._processor = FusionImageProcessor()

    def paths(self, stem: str) -> dict[str, Path]:
        """Method name -> file of that method's output for ``stem`` (methods without one are left out)."""
        found = {}
        for method in self.methods:
            matches = sorted((self.root / method).glob(f"{stem}.*"))
            if matches:
                found[method] = matches[0]
        return found

    def load(self, method: str, stem: str, size: tuple[int, int]) -> torch.Tensor:
        """A method's output for ``stem`` as (1, C, H, W) in [0, 1], resized to ``size`` = (H, W) if it
        was shipped at another size (e.g. MEFB's FMMEF outputs at twice the input size)."""
        path = self.paths(stem).get(method)
        if path is None:
            raise FileNotFoundError(f"No output of {method} for {stem!r} under {self.root / method}.")
        return self._processor.resize(self._processor.load(path)[None], size)
