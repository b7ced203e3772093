"""Closeness to a known truth, for synthetic pairs (the fusion metrics are all source-referenced)."""

from __future__ import annotations

import torch

from ..metrics.fusion import ssim, to_gray_255


def psnr_to_truth(image: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR (dB) of an image (1, C, H, W) in [0, 1] against the truth (1, C', H, W); a gray image is compared
    with every channel of a colour truth."""
    image = image.expand_as(truth) if image.shape[1] == 1 else image
    return float(10 * torch.log10(1 / ((image - truth) ** 2).mean()))


def ssim_to_truth(image: torch.Tensor, truth: torch.Tensor) -> float:
    """SSIM of the 8-bit luma of an image against that of the truth (data range 255)."""
    gray = to_gray_255(truth)
    return float(ssim(to_gray_255(image), gray, gray, data_range=255)) / 2  # ssim() sums over its two sources
