"""Fusion of more than two frames (exposure brackets, focus stacks) with the pair network.

The network scores each frame against the stack's mean (one call per frame, the frames as a batch; for MEF in the
slot its exposure suits: a darker frame as the under-exposed source, a brighter one as the over-exposed); the scores
become per-pixel, per-pyramid-level weights by a softmax over the frames, and the fused image is the collapsed
blend of the frames' Laplacian pyramids (:func:`blend_stack`; for MEF the base level's brighter-than-the-mean prior
gives way to a well-exposedness term, which also joins a softer activity prior on the detail levels). Every step
treats the frames alike, so the order of the frames changes the result only by float rounding. Exposure pairs with
``natural_exposure`` take this blend too (:data:`MEF_PAIR_BASE_MIN_SIZE`).
"""

from __future__ import annotations

import math

import torch

from .image_processor import FusionImageProcessor
from .pyramid import activity_logit, collapse, fit_maps, gaussian_pyramid, laplacian_pyramid
from .scheduler import FlowMatchFusionScheduler
from .tasks import FusionTask
from .tiling import TILE_OVERLAP_DIVISOR, fuse_in_tiles

MAX_FRAMES = 64
"""Frames one call may fuse (memory grows with the frame count; see the pipeline's pixel cap)."""

WELL_EXPOSED_SIGMA = 0.2
"""Width of the well-exposedness weight exp(-(y - 0.5)^2 / (2 sigma^2)) (Mertens, Kautz and Van Reeth, 2007)."""

MEF_WELL_EXPOSEDNESS = 1.0
"""Strength of the well-exposedness term on an exposure stack's base level, which replaces the base's
brighter-than-the-mean activity prior there: chosen by MEF-SSIM on the Merianos three-exposure sets of the
validation split (scripts/experiments/stack_base_variants.py, docs/stacks.md)."""

MEF_DETAIL_WELL_EXPOSEDNESS = 1.0
"""Strength of the well-exposedness term on an exposure stack's detail levels (each frame's per-pixel term,
averaged down to the level's size, as Mertens et al. blend with the Gaussian pyramid of their weights)."""

MEF_DETAIL_STRENGTH = 4.0
"""Detail levels' activity strength for exposure stacks (the pair network's is 16): with well-exposedness on the
detail levels, a softer max-abs choice scored higher on both kinds of validation stack (docs/stacks.md)."""

MEF_PAIR_BASE_MIN_SIZE = 8
"""Exposure pairs blended by well-exposedness (``natural_exposure``) blend their base level through its own pyramid
down to about this many pixels (:func:`blend_stack`'s ``base_min_size``). With only two exposures, one often clipped,
the weights swing from one to the other across an edge such as a bright window, and a per-pixel base blend leaves a
dark or bright ring around it at 1/16 of the image size; blended down to 8 pixels the change spreads over the image.
Chosen by eye on the Merianos validation pairs (16 still left a halo around a roof against the sky); stacks of three
or more keep the per-pixel base, which scored higher on their validation (docs/stacks.md)."""


def blend_stack(frames: torch.Tensor, logits: torch.Tensor, gains: torch.Tensor,
                activity_scales: torch.Tensor | None = None, well_exposedness: float = 0.0,
                detail_well_exposedness: float = 0.0, base_min_size: int = 0) -> torch.Tensor:
    """Band-wise softmax blend of N frames.

    Args:
        frames: (N, 1, H, W) luminances.
        logits: (N, L, h, w) each frame's weight logits per Laplacian level (any resolution; fitted per level).
            L = 1 blends the frames per pixel.
        gains: (N, L - 1, h, w) detail gains; the blend uses their mean over the frames.
        activity_scales: optional (L,) strengths s_k of the network's activity prior: each frame's logit at level
            k gains s_k :func:`fusionfm.pyramid.activity_logit` (frame against the stack's mean), as a pair's does.
        well_exposedness: strength w of a well-exposedness term on the base level: each frame's base logit gains
            -w (base - 0.5)^2 / (2 sigma^2), its base band being its local mean, so well-exposed frames lead the
            coarse brightness (the pair network has only seen two frames; with more, the middle ones are often
            the best exposed).
        detail_well_exposedness: strength of the same term on the detail levels, taken per pixel of each frame and
            averaged down to each level's size.
        base_min_size: when > 0, the base level is blended through its own Laplacian pyramid, down to about this
            many pixels on its short side, with the Gaussian pyramid of its weights (as Mertens et al. blend
            whole images); 0: per pixel.

    Returns:
        (1, 1, H, W): per level k, sum_i softmax_i(logits_k) L_k(frame_i), detail levels times the mean gain.
    """
    levels = logits.shape[1]
    if gains.shape[1] != levels - 1:
        raise ValueError(f"{levels} logit maps need {levels - 1} gain maps, got {gains.shape[1]}.")
    pyramid = laplacian_pyramid(frames, levels) if levels > 1 else [frames]
    exposure_term = -((frames - 0.5) ** 2) / (2 * WELL_EXPOSED_SIGMA**2) if detail_well_exposedness else None
    fused = []
    for level, bands in enumerate(pyramid):
        size = tuple(bands.shape[-2:])
        level_logits = fit_maps(logits[:, level : level + 1], size)
        if activity_scales is not None:
            mean_band = bands.mean(dim=0, keepdim=True)  # the pyramid of the mean frame (the pyramid is linear)
            level_logits = level_logits + activity_scales[level] * activity_logit(bands, mean_band,
                                                                                  base=level == levels - 1)
        if well_exposedness and level == levels - 1:
            level_logits = level_logits - well_exposedness * (bands - 0.5) ** 2 / (2 * WELL_EXPOSED_SIGMA**2)
        if exposure_term is not None and level < levels - 1:
            level_logits = level_logits + detail_well_exposedness * fit_maps(exposure_term, size)
        weights = torch.softmax(level_logits, dim=0)
        if level == levels - 1 and base_min_size:
            band = _blend_through_pyramid(bands, weights, base_min_size)
        else:
            band = (weights * bands).sum(dim=0, keepdim=True)
        if level < levels - 1:
            band = band * fit_maps(gains[:, level : level + 1], size).mean(dim=0, keepdim=True)
        fused.append(band)
    return collapse(fused) if levels > 1 else fused[0]


def _blend_through_pyramid(bands: torch.Tensor, weights: torch.Tensor, min_size: int) -> torch.Tensor:
    """(N, 1, h, w) bands blended with (N, 1, h, w) weights (summing to 1 over N) level by level of their
    Laplacian pyramid, down to about ``min_size`` pixels on the short side: (1, 1, h, w)."""
    depth = max(1, int(math.log2(max(min(bands.shape[-2:]), 1) / min_size)) + 1)
    level_weights = gaussian_pyramid(weights, depth)  # still sums to 1 over N: the blur and resize are linear
    return collapse([(weight * band).sum(dim=0, keepdim=True) for weight, band in
                     zip(level_weights, laplacian_pyramid(bands, depth), strict=True)])


def fuse_stack(unet, scheduler: FlowMatchFusionScheduler, luma: torch.Tensor, task: FusionTask,
               compute_dtype: torch.dtype, batch_size: int, detail_gains: torch.Tensor | None, tile_size: int,
               border_margin: int, base_min_size: int = 0) -> torch.Tensor:
    """The stack blend of (N, 1, h, w) frame luminances with ``unet`` (a :class:`fusionfm.unet.FusionUNet`):
    (1, 1, h, w) on the CPU, in tiles of ``tile_size`` pixels (0: whole) when larger.

    ``detail_gains``: (1, L - 1) gains of every detail level instead of the network's, or None;
    ``base_min_size``: see :func:`blend_stack`; ``border_margin``: mirrored pixels around each tile.
    """
    # Which slot each frame takes is decided once for the whole stack, so every tile agrees on it.
    brighter = torch.zeros(len(luma), 1, 1, 1, dtype=torch.bool)
    if task.family == "MEF":
        brighter = (luma.mean(dim=(1, 2, 3)) > luma.mean()).view(-1, 1, 1, 1)

    def blend_tile(box: tuple[int, int, int, int]) -> torch.Tensor:
        return _blend_tile(unet, scheduler, luma[..., box[0]:box[2], box[1]:box[3]], brighter, task, compute_dtype,
                           batch_size, detail_gains, border_margin, base_min_size)

    height, width = luma.shape[-2:]
    return fuse_in_tiles(blend_tile, height, width, tile_size, tile_size // TILE_OVERLAP_DIVISOR).cpu()


def _blend_tile(unet, scheduler: FlowMatchFusionScheduler, luma: torch.Tensor, brighter: torch.Tensor,
                task: FusionTask, compute_dtype: torch.dtype, batch_size: int, detail_gains: torch.Tensor | None,
                border_margin: int, base_min_size: int) -> torch.Tensor:
    """:func:`fuse_stack` of one tile (N, 1, h, w): (1, 1, h, w)."""
    device = unet.device
    luma, brighter = luma.to(device), brighter.to(device)
    padded, box = FusionImageProcessor.pad_to_multiple(luma, unet.size_multiple, border_margin)
    reference = padded.mean(dim=0, keepdim=True).expand_as(padded)
    image_a = torch.where(brighter, reference, padded)
    image_b = torch.where(brighter, padded, reference)
    weights_dtype = unet.dtype
    autocast = torch.autocast(device.type, dtype=compute_dtype,
                              enabled=compute_dtype not in (weights_dtype, torch.float32))
    exposure = task.family == "MEF"
    logits, gains = [], []
    for start in range(0, len(luma), batch_size):
        chunk = slice(start, start + batch_size)
        count = image_a[chunk].shape[0]
        x0 = scheduler.source_point(image_a[chunk], image_b[chunk], None)
        with autocast:
            chunk_logits, chunk_gains = unet.source_maps(
                x0.to(weights_dtype), image_a[chunk].to(weights_dtype), image_b[chunk].to(weights_dtype),
                torch.zeros(count, device=device),
                torch.full((count,), task.class_id, dtype=torch.long, device=device),
                detail_gains=None if detail_gains is None else detail_gains.to(device).expand(count, -1))
        logits.append(chunk_logits.float())
        gains.append(chunk_gains.float())
    # The logit is the a-slot's weight: a frame in the b slot scores with its negative.
    logits = torch.where(brighter, -1.0, 1.0) * torch.cat(logits)
    activity_scales = unet.activity_scales_for(torch.tensor([task.class_id], device=device))
    if activity_scales is not None:
        activity_scales = activity_scales[0].detach().clone()
        if exposure:  # an exposure stack's weights follow well-exposedness, not brightness, and detail less
            activity_scales[-1] = 0.0
            activity_scales[:-1] = MEF_DETAIL_STRENGTH
        elif bool(unet.sharper_base[task.class_id]):  # stacks compare brightness only: mean base instead
            activity_scales[-1] = 0.0
    fused = blend_stack(padded.float(), logits, torch.cat(gains), activity_scales,
                        well_exposedness=MEF_WELL_EXPOSEDNESS if exposure else 0.0,
                        detail_well_exposedness=MEF_DETAIL_WELL_EXPOSEDNESS if exposure else 0.0,
                        base_min_size=base_min_size)
    return FusionImageProcessor.crop(fused, box)
