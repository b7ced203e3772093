"""Tiles for fusing large images with bounded memory: overlapping boxes and feathered blending weights.

The network sees each tile with its own mirrored border margin, so a tile's edge looks like an image edge to it;
overlapping tiles are blended with weights that fall linearly to zero across the overlap, so no seam shows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TILE_OVERLAP_DIVISOR = 4
"""Tiles overlap by a quarter of their side (256 pixels for 1024-pixel tiles)."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` in common."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of the tiles covering a height x width image, row by row."""
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap {overlap} for tile {tile}.")
    return [(top, left, min(top + tile, height), min(left + tile, width))
            for top in tile_starts(height, tile, overlap) for left in tile_starts(width, tile, overlap)]


def _ramp(length: int, start: int, stop: int, total: int, overlap: int) -> torch.Tensor:
    """1-D weights of one tile along one axis: a linear ramp over ``overlap`` pixels at each end that is not
    an image border, 1 elsewhere (never 0, so every pixel has weight)."""
    weights = torch.ones(length)
    ramp = (torch.arange(overlap, dtype=torch.float32) + 1) / (overlap + 1)
    if start > 0 and overlap:
        weights[:overlap] = ramp
    if stop < total and overlap:
        weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


def feather_window(box: tuple[int, int, int, int], height: int, width: int, overlap: int) -> torch.Tensor:
    """(1, 1, h, w) blending weights of one tile of :func:`tile_boxes`."""
    top, left, bottom, right = box
    rows = _ramp(bottom - top, top, bottom, height, overlap)
    columns = _ramp(right - left, left, right, width, overlap)
    return (rows[:, None] * columns[None, :])[None, None]


def fuse_in_tiles(fuse_box: Callable[[tuple[int, int, int, int]], torch.Tensor], height: int, width: int, tile: int,
                  overlap: int) -> torch.Tensor:
    """Fuse a height x width image tile by tile and blend the tiles with :func:`feather_window` weights.

    Args:
        fuse_box: returns the (B, C, h, w) result for one (top, left, bottom, right) box of :func:`tile_boxes`.
        tile: tile side in pixels; 0, or an image that fits one tile, is fused in one piece.

    Returns:
        (B, C, height, width): in one piece, ``fuse_box``'s result for the whole image as it is; in tiles, on the
        CPU, float32.
    """
    if not tile or (height <= tile and width <= tile):
        return fuse_box((0, 0, height, width))
    fused = torch.zeros(0)
    total = torch.zeros(1, 1, height, width)
    for box in tile_boxes(height, width, tile, overlap):
        top, left, bottom, right = box
        result = fuse_box(box).float().cpu()
        if fused.numel() == 0:
            fused = torch.zeros(*result.shape[:2], height, width)
        window = feather_window(box, height, width, overlap)
        fused[..., top:bottom, left:right] += window * result
        total[..., top:bottom, left:right] += window
    return fused / total
