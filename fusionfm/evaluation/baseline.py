"""The plain-average baseline that every result is compared with: (a + b) / 2 of the 8-bit gray sources."""

from __future__ import annotations

import torch

from ..metrics.fusion import to_gray_255


def average_255(gray_a: torch.Tensor, gray_b: torch.Tensor) -> torch.Tensor:
    """The plain average of two 8-bit gray images (values 0..255 as float, any shape), rounded as an 8-bit
    image would be (half up)."""
    return ((gray_a + gray_b) / 2).round()


def average_of_images_255(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """The plain average of two images (C, H, W) or (B, C, H, W) in [0, 1], as the evaluator sees it:
    8-bit gray (B, 1, H, W) float64, from their 8-bit luma."""
    return average_255(to_gray_255(image_a), to_gray_255(image_b))
