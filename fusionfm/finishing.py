"""The fused luminance's last step, against its sources: what a band-wise fusion carries where the sources say for
certain what belongs there.

Both functions take (B, 1, H, W) luminances in [0, 1] and return the fused one, (B, 1, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLACK_LEVEL = 0.5 / 255.0
"""A source pixel within this of 0 (of 1) is black (white): it rounds to 0 (255) in 8 bits."""

LIT_SOURCE_RADIUS = 4
"""Half-width in pixels of the box in which :func:`favour_the_lit_source` counts a source's black pixels."""

LIT_SOURCE_POWER = 3
"""The black share's exponent in :func:`favour_the_lit_source`: the fusion moves to the lit source only where the
other is black nearly all around (a share of 0.5 moves it an eighth of the way), so the switch has no seam."""


def keep_shared_extremes(fused_y: torch.Tensor, sources_y: list[torch.Tensor]) -> torch.Tensor:
    """Black where every source is black, white where every source is white.

    A band-wise fusion can carry a little of a bright object's coarse bands into the black around it (a glow around a
    CT skull, a few grey levels and up to 69 right next to it on the MRI-CT validation pairs: the base band follows
    the brighter source while the detail bands that would cancel its blur there are mixed). Nothing in the sources
    is there, so the fusion keeps their black (white).

    Args:
        fused_y: the fused luminance.
        sources_y: the sources' luminances, two or more.

    Returns:
        ``fused_y`` at most the brightest source where all are within :data:`BLACK_LEVEL` of 0, at least the darkest
        where all are within it of 1; unchanged elsewhere.
    """
    stacked = torch.stack(sources_y)
    brightest, darkest = stacked.amax(dim=0), stacked.amin(dim=0)
    fused_y = torch.where(brightest <= BLACK_LEVEL, torch.minimum(fused_y, brightest), fused_y)
    return torch.where(darkest >= 1.0 - BLACK_LEVEL, torch.maximum(fused_y, darkest), fused_y)


def favour_the_lit_source(fused_y: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                          radius: int = LIT_SOURCE_RADIUS, power: float = LIT_SOURCE_POWER) -> torch.Tensor:
    """Where one source is black all around a pixel, the fusion moves to the other source.

    For scans (MRI with CT, PET or SPECT) black is no signal: a CT's air and soft tissue below its window, a PET's
    background. A band-wise fusion still mixes such a source's coarse bands into the other's there: a grey glow of
    the skull in the MRI's dark orbits and sinuses. With s_a, s_b the shares of black pixels of each source in a
    (2r + 1)^2 box around a pixel, raised to ``power``, the result is w_a a + w_b b + (1 - w_a - w_b) f with
    w_a = s_b - min(s_a, s_b) and w_b = s_a - min(s_a, s_b): all of the lit source where the other is black all around,
    the fusion itself where neither (or both) is, and a smooth switch between.

    Args:
        fused_y: the fused luminance.
        y_a, y_b: the two sources' luminances.
        radius: the box's half-width r in pixels.
        power: the shares' exponent.
    """
    black = torch.cat([y_a, y_b], dim=1).le(BLACK_LEVEL).float()
    shares = _box_mean(black, radius).pow_(power)
    share_a, share_b = shares[:, 0:1], shares[:, 1:2]
    both = torch.minimum(share_a, share_b)
    weight_a, weight_b = share_b - both, share_a - both
    return weight_a * y_a + weight_b * y_b + (1 - weight_a - weight_b) * fused_y


def _box_mean(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of (B, C, H, W) ``maps`` over the (2r + 1)^2 box around each pixel, the box cut at the image's edges (what
    ``avg_pool2d(..., count_include_pad=False)`` gives). By running sums: about 3x faster than ``avg_pool2d`` on a CPU,
    and exact for the 0/1 maps counted here."""
    height, width = maps.shape[-2:]
    sums = _running_box_sum(_running_box_sum(maps, radius, -1), radius, -2)
    rows = _running_box_sum(maps.new_ones(1, 1, height, 1), radius, -2)
    columns = _running_box_sum(maps.new_ones(1, 1, 1, width), radius, -1)
    return sums / (rows * columns)


def _running_box_sum(maps: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sums over the 2r + 1 entries around each one along ``dim`` (-1 or -2), zero beyond the edges."""
    padding = (radius + 1, radius) if dim == -1 else (0, 0, radius + 1, radius)
    cumulative = F.pad(maps, padding).cumsum(dim)
    size = maps.shape[dim]
    return cumulative.narrow(dim, 2 * radius + 1, size) - cumulative.narrow(dim, 0, size)
