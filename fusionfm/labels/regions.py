"""Region-level selection: a label merged from the best candidate of every region, without seams.

Stage 1 picks one candidate per pair; a pair often has regions where different candidates are best (the
guided-filter fusion keeps the thermal target, the pyramid fusion the foliage). Here every candidate gets a
per-pixel score from *local* versions of the task's selection metrics (computed in ``window`` x ``window``
neighbourhoods: Qabf, SSIM, SD, SF, AG; the global-only metrics VIF, MI, EN, SCD, CC, PSNR and MSE are left out
and the task's remaining weights renormalised), normalised across the candidates per pixel as stage 1 does per
pair. Each pixel takes the best candidate; the choice maps are merged in a Laplacian pyramid (each band blended
with the Gaussian pyramid of the choice maps, as exposure fusion blends its weights), so region borders leave no
seam. The result is one more candidate for stage 1: it becomes the label only where it scores best overall.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.metrics import ssim

from ..color import luminance, recombine
from ..metrics.fusion import qabf_maps, to_gray_255
from ..pyramid import collapse, gaussian_pyramid, laplacian_pyramid, pyramid_levels
from ..tasks import FusionTask, get_task
from .selection import SELECTION_WEIGHTS

LOCAL_METRICS = ("Qabf", "SSIM", "SD", "SF", "AG")
"""Metrics with a local (per-neighbourhood) version."""


@dataclass
class RegionSelection:
    """The merged label (1, C, H, W) in [0, 1], the chosen candidate per pixel (1, 1, H, W) as an index into
    ``names``, and each candidate's share of the pixels."""

    label: torch.Tensor
    choice: torch.Tensor
    names: list[str]
    shares: dict[str, float]


def _box(image: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over ``window`` x ``window`` neighbourhoods (fewer at the borders), same size."""
    return F.avg_pool2d(image, window, stride=1, padding=window // 2, count_include_pad=False)


def local_metric_maps(fused: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor, window: int) -> dict:
    """Local Qabf, SSIM (F with A plus F with B), SD, SF and AG of 8-bit gray images (B, 1, H, W): name ->
    (B, 1, H, W) map."""
    numerator, denominator = qabf_maps(fused, gray_a, gray_b)
    fused, gray_a, gray_b = (x.float() for x in (fused, gray_a, gray_b))
    maps = {"Qabf": _box(numerator, window) / _box(denominator, window).clamp_min(1e-6)}
    structure = ssim(fused / 255, gray_a / 255, 7) + ssim(fused / 255, gray_b / 255, 7)
    maps["SSIM"] = _box(structure, window)
    mean = _box(fused, window)
    maps["SD"] = (_box(fused * fused, window) - mean * mean).clamp_min(0).sqrt()
    dx = F.pad(fused[..., :, 1:] - fused[..., :, :-1], (0, 1))
    dy = F.pad(fused[..., 1:, :] - fused[..., :-1, :], (0, 0, 0, 1))
    maps["SF"] = (_box(dx * dx, window) + _box(dy * dy, window)).sqrt()
    maps["AG"] = _box(((dx * dx + dy * dy) / 2).sqrt(), window)
    return maps


def local_weights(task: str | FusionTask) -> dict[str, float]:
    """The task's stage-1 weights restricted to :data:`LOCAL_METRICS`, renormalised to sum to 1."""
    row = {metric: weight for metric, weight in SELECTION_WEIGHTS[get_task(task).family].items()
           if metric in LOCAL_METRICS}
    total = sum(row.values())
    return {metric: weight / total for metric, weight in row.items()}


def region_select(candidates: dict[str, torch.Tensor], image_a: torch.Tensor, image_b: torch.Tensor,
                  task: str | FusionTask, window: int = 31) -> RegionSelection:
    """Merge the best candidate of every region into one label.

    Args:
        candidates: name -> fused image (1, C, H, W) in [0, 1], same size as the sources.
        image_a, image_b: the sources (1, C, H, W) in [0, 1].
        task: the task (its family picks the metric weights; its colour policy colours the label).
        window: side in pixels of the neighbourhoods the local metrics are computed over (odd).
    """
    names = list(candidates)
    gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
    maps = [local_metric_maps(to_gray_255(candidates[name]), gray_a, gray_b, window) for name in names]
    scores = torch.zeros(len(names), 1, *gray_a.shape[-2:])
    for metric, weight in local_weights(task).items():
        values = torch.cat([candidate_maps[metric] for candidate_maps in maps])
        low, high = values.amin(dim=0, keepdim=True), values.amax(dim=0, keepdim=True)
        scores += weight * torch.where(high > low, (values - low) / (high - low).clamp_min(1e-12), 0.5)
    choice = scores.argmax(dim=0, keepdim=True)  # (1, 1, H, W)
    one_hot = torch.cat([(choice == index).float() for index in range(len(names))], dim=1)  # (1, N, H, W)
    levels = pyramid_levels(*choice.shape[-2:])
    weight_pyramid = gaussian_pyramid(one_hot, levels)
    bands = [luminance(candidates[name].float()) for name in names]
    band_pyramids = [laplacian_pyramid(band, levels) for band in bands]
    merged = collapse([sum(weight_pyramid[level][:, index : index + 1] * band_pyramids[index][level]
                           for index in range(len(names))) for level in range(levels)])
    label = recombine(merged.clamp(0, 1), image_a, image_b, get_task(task).color_policy)
    shares = {name: float((choice == index).float().mean()) for index, name in enumerate(names)}
    return RegionSelection(label, choice, names, shares)
