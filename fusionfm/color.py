"""Luminance extraction and colour recombination (docs/design.md, "Colour").

All functions take float tensors in [0, 1] shaped (B, C, H, W) with C = 1 (gray) or 3 (RGB).
YCbCr is the full-range BT.601 variant (as OpenCV's RGB2YCrCb and kornia use): Y in [0, 1],
Cb/Cr in [0, 1] with 0.5 neutral.
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_ycbcr

from .tasks import ColorPolicy

GRAY_TOLERANCE = 2.0 / 255.0
"""Largest channel difference for which an RGB image still counts as gray (JPEG noise)."""


def is_gray(image: torch.Tensor, tolerance: float = GRAY_TOLERANCE) -> bool:
    """Whether an image (C, H, W) or (B, C, H, W) has gray content (1 channel or R = G = B)."""
    if image.shape[-3] == 1:
        return True
    red, green, blue = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    return bool(((red - green).abs().max() <= tolerance) and ((red - blue).abs().max() <= tolerance))


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Y channel of a gray or RGB image: (B, C, H, W) -> (B, 1, H, W), in [0, 1]."""
    if image.shape[-3] == 1:
        return image
    return rgb_to_ycbcr(image)[..., :1, :, :]


def chroma(image: torch.Tensor) -> torch.Tensor:
    """Cb/Cr channels of a gray or RGB image: (B, C, H, W) -> (B, 2, H, W), 0.5 is neutral."""
    if image.shape[-3] == 1:
        return torch.full_like(image, 0.5).expand(*image.shape[:-3], 2, *image.shape[-2:]).clone()
    return rgb_to_ycbcr(image)[..., 1:, :, :]


def saturation_weighted_chroma(*chromas: torch.Tensor) -> torch.Tensor:
    """Per-pixel, per-channel blend of Cb/Cr maps weighted by their distance from neutral.

    The rule of the MEF literature: C = sum_i C_i |C_i - 0.5| / sum_i |C_i - 0.5|, neutral where all are
    neutral; for any number of sources, in any order. Shapes (B, 2, H, W) each -> (B, 2, H, W).
    """
    stacked = torch.stack(chromas)
    weights = (stacked - 0.5).abs()
    total = weights.sum(dim=0)
    blended = (stacked * weights).sum(dim=0) / total.clamp_min(1e-12)
    return torch.where(total > 1e-12, blended, torch.full_like(blended, 0.5))


def luminance_with_chroma(fused_y: torch.Tensor, fused_chroma: torch.Tensor) -> torch.Tensor:
    """RGB with exactly the luminance ``fused_y`` (B, 1, H, W) and the hue of ``fused_chroma`` (B, 2, H, W).

    Where the colour does not fit in [0, 1] at that luminance (a saturated PET red at a bright MRI pixel),
    its saturation is reduced towards gray until it fits, rather than each channel clipped: clipping would
    change the luminance the fusion chose (by up to 50 grey levels in MRI-PET fusions) and the hue with it.

    Returns:
        (B, 3, H, W) RGB in [0, 1] whose BT.601 luma is ``fused_y``.
    """
    fused_y = fused_y.clamp(0.0, 1.0)
    # The chroma's contribution to R, G, B (kornia's inverse coefficients; its ycbcr_to_rgb clips, so it cannot
    # give the unclipped colour) has zero luma, so any fraction of it keeps the luminance.
    cb, cr = fused_chroma[..., 0:1, :, :] - 0.5, fused_chroma[..., 1:2, :, :] - 0.5
    colour = torch.cat([1.4025245442 * cr, -0.7144034731 * cr - 0.3443401356 * cb, 1.7730496454 * cb], dim=-3)
    # Each channel may move up by 1 - Y or down by Y; the largest fraction that fits all three (1 where it all fits).
    room = torch.where(colour > 0, 1.0 - fused_y, fused_y).div_(colour.abs().clamp_min(torch.finfo(colour.dtype).tiny))
    fraction = room.amin(dim=-3, keepdim=True).clamp_(0.0, 1.0)
    return colour.mul_(fraction).add_(fused_y).clamp_(0.0, 1.0)


CHROMA_SCALE_POWER = 0.5
"""How a frame's colour follows the brightness the fusion gives it: Cb/Cr offsets times (fused / frame
luminance) to this power. 1 would keep the surface's colour ratios exactly; cameras' tone curves desaturate bright
colours, so that overshoots. On the synthetic exposure pairs of the validation split (their photograph is the
truth) the power 0.5 came nearest the truth's colour: 7.2 grey levels of RGB error at the fused luminance, against
9.7 for unscaled offsets (0) and 14.6 for the ratios (1)."""

MAX_CHROMA_SCALE = 16.0
"""The largest brightness ratio taken into account (a nearly black pixel's chroma is mostly noise)."""


def exposure_matched_chroma(fused_y: torch.Tensor, frames: list[torch.Tensor]) -> torch.Tensor:
    """Each frame's chroma offset scaled by (fused / frame luminance) ** :data:`CHROMA_SCALE_POWER`, then blended by
    :func:`saturation_weighted_chroma`: (B, 2, H, W) for ``fused_y`` (B, 1, H, W) and frames (B, C, H, W).

    A dark frame's colour taken unscaled onto a brighter fusion looks washed out; scaled, it keeps more of the
    surface's colour. Frames at the fusion's brightness (focus stacks) keep their offsets.
    """
    scaled = []
    for frame in frames:
        ratio = ((fused_y + 1e-3) / (luminance(frame) + 1e-3)).clamp(max=MAX_CHROMA_SCALE)
        scaled.append((chroma(frame) - 0.5) * ratio**CHROMA_SCALE_POWER + 0.5)
    return saturation_weighted_chroma(*scaled)


def recombine_frames(fused_y: torch.Tensor, frames: list[torch.Tensor]) -> torch.Tensor:
    """Colour for a fusion of several frames (exposure brackets, focus stacks): the frames' chroma at the fused
    brightness (:func:`exposure_matched_chroma`) on ``fused_y`` (B, 1, H, W); frames (B, C, H, W) of that size.
    Gray when every frame is."""
    if all(is_gray(frame) for frame in frames):
        return fused_y
    return luminance_with_chroma(fused_y, exposure_matched_chroma(fused_y, frames))


def recombine(
    fused_y: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, policy: ColorPolicy
) -> torch.Tensor:
    """Put colour back on a fused luminance according to the task's policy.

    Args:
        fused_y: (B, 1, H, W) fused luminance in [0, 1].
        image_a, image_b: (B, C, H, W) the two source images (C = 1 or 3), same H and W.
        policy: the task's colour policy.

    Returns:
        (B, 1, H, W) when the policy's chroma sources are gray, else (B, 3, H, W) RGB; in [0, 1].
    """
    if policy == ColorPolicy.CHROMA_FROM_B:
        if is_gray(image_b):
            return fused_y
        fused_chroma = chroma(image_b)
    elif policy == ColorPolicy.SATURATION_WEIGHTED:
        return recombine_frames(fused_y, [image_a, image_b])
    else:
        raise ValueError(f"Unknown colour policy {policy!r}.")
    return luminance_with_chroma(fused_y, fused_chroma)
