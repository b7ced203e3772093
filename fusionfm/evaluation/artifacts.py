"""Artifacts a fusion network can add of its own: a 2-pixel checkerboard and bands along the image border.

Both are measured relative to the inputs (or the plain average), so that content that really is there does not
count: a finely striped source may have Nyquist energy of its own, and a vignetted photograph darker borders.
"""

from __future__ import annotations

import torch


def nyquist_energy(image: torch.Tensor) -> float:
    """Energy at the highest frequency along rows and along columns, per pixel, of a gray image (1, 1, H, W)
    (e.g. 8-bit values as float): the squared alternating-sign sums of each row and each column, averaged.
    A 2-pixel checkerboard or stripe pattern raises it; smooth content does not."""
    image = image.detach().double()[0, 0]
    height, width = image.shape
    rows = image[:, : width - width % 2]
    columns = image[: height - height % 2, :]
    row_signs = torch.ones(rows.shape[1], dtype=torch.float64)
    row_signs[1::2] = -1
    column_signs = torch.ones(columns.shape[0], dtype=torch.float64)
    column_signs[1::2] = -1
    along_rows = (rows @ row_signs).square().mean() / rows.shape[1]
    along_columns = (column_signs @ columns).square().mean() / columns.shape[0]
    return float(along_rows + along_columns) / 2


def nyquist_ratio(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> float:
    """The fused image's :func:`nyquist_energy` over the larger of the two sources' (gray (1, 1, H, W) each);
    about 1 or below for a fusion without a checkerboard of its own."""
    return nyquist_energy(fused) / max(nyquist_energy(image_a), nyquist_energy(image_b), 1e-12)


def _border_steps(image: torch.Tensor, width: int) -> list[float]:
    """Per side (top, bottom, left, right) of (1, 1, H, W): mean of the outer ``width`` pixels minus the mean of
    the next ``width``."""
    image = image.double()[0, 0]
    outer_inner = [(image[:width], image[width : 2 * width]), (image[-width:], image[-2 * width : -width]),
                   (image[:, :width], image[:, width : 2 * width]), (image[:, -width:], image[:, -2 * width : -width])]
    return [float(outer.mean() - inner.mean()) for outer, inner in outer_inner]


def border_band(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, width: int = 16) -> float:
    """How far the fused image's border step leaves the range of the sources' border steps, worst side.

    Per side, the step is the mean of the outer ``width`` pixels minus the mean of the next ``width``; any
    per-pixel blend of the sources (the plain average, a choose-max) has a step between the two sources'. Gray
    (1, 1, H, W) images; in their units (grey levels for 8-bit values); 0 without a band of its own.
    """
    excess = []
    for ours, step_a, step_b in zip(*(_border_steps(x, width) for x in (fused, image_a, image_b)), strict=True):
        low, high = min(step_a, step_b), max(step_a, step_b)
        excess.append(max(low - ours, ours - high, 0.0))
    return max(excess)
