"""Fidelity checks of a fusion against its sources, beyond the benchmark metrics: values outside both sources near
edges, light sources that do not stay white, washed-out colour.

Gray images are 8-bit values as float, (B, 1, H, W) in [0, 255] (:func:`fusionfm.metrics.fusion.to_gray_255`); colour
images (B, 3, H, W) in [0, 1]. Each function returns one value per image, (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import spatial_gradient

LIGHT_LEVEL = 250.0
"""A source at or above this grey level is clipped white."""

LIGHT_RADIUS = 8
"""Clipped regions that a square of side 2 radius + 1 (pixels) fits into are over-exposed areas (a white sky), not
light sources: :func:`light_sources` leaves them out."""


def light_sources(gray: torch.Tensor, radius: int = LIGHT_RADIUS, level: float = LIGHT_LEVEL) -> torch.Tensor:
    """(B, 1, H, W) mask (float, 0 or 1) of the compact clipped-white regions of ``gray`` (values on ``level``'s
    scale): headlights, lamps, the sun. The clipped pixels minus the morphological opening of the clipped set, which
    keeps what is wider than the square, such as an over-exposed sky."""
    clipped = (gray >= level).float()
    size = 2 * radius + 1
    eroded = -F.max_pool2d(-clipped, size, stride=1, padding=radius)
    opened = F.max_pool2d(eroded, size, stride=1, padding=radius)
    return clipped * (1 - opened)


def outside_share_near_edges(fused: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor, margin: float = 10.0,
                             edge_share: float = 0.1) -> torch.Tensor:
    """Share of the pixels near strong edges where the fusion lies more than ``margin`` grey levels outside both
    sources' range, (B,). Near strong edges: the ``edge_share`` of pixels with the largest Sobel strength of the
    stronger source (ringing and halos of band-wise fusion sit there)."""
    strength = torch.maximum(*(spatial_gradient(x, mode="sobel").norm(dim=2) for x in (gray_a, gray_b)))
    threshold = torch.quantile(strength.flatten(1), 1 - edge_share, dim=1).view(-1, 1, 1, 1)
    edges = strength >= threshold
    outside = (fused > torch.maximum(gray_a, gray_b) + margin) | (fused < torch.minimum(gray_a, gray_b) - margin)
    return (outside & edges).flatten(1).sum(1) / edges.flatten(1).sum(1).clamp_min(1)


def light_source_shortfall(fused: torch.Tensor, gray_white: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the fusion falls below a source's compact clipped-white regions (:func:`light_sources` of
    ``gray_white``): (mean shortfall in grey levels over those pixels, their count), each (B,); 0 where none."""
    mask = light_sources(gray_white)
    count = mask.flatten(1).sum(1)
    shortfall = ((gray_white - fused).clamp_min(0) * mask).flatten(1).sum(1) / count.clamp_min(1)
    return shortfall, count


def mean_saturation(rgb: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation (max - min) / max of (B, C, H, W) in [0, 1] (0 for gray and black pixels): (B,)."""
    if rgb.shape[1] == 1:
        return torch.zeros(rgb.shape[0])
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    return torch.where(high > 0, (high - low) / high.clamp_min(1e-6), 0.0).flatten(1).mean(1)
