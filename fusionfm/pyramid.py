"""Gaussian and Laplacian pyramids of (B, C, H, W) images (Burt-Adelson, 5x5 Gaussian, sigma 1).

Shared by the pyramid prior (:mod:`fusionfm.priors`) and the U-Net's pyramid output head
(:mod:`fusionfm.unet`). :func:`collapse` inverts :func:`laplacian_pyramid` exactly (up to float rounding) for
any size: each level is half the previous one, rounded up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d


def pyramid_levels(height: int, width: int, max_levels: int = 5) -> int:
    """Levels such that the coarsest level keeps at least 8 pixels on its short side."""
    return max(1, min(max_levels, int(math.log2(max(min(height, width), 8) / 8)) + 1))


def downsample(image: torch.Tensor) -> torch.Tensor:
    """Blur, then halve (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))."""
    blurred = gaussian_blur2d(image, (5, 5), (1.0, 1.0), border_type="replicate")
    return F.interpolate(blurred, size=((image.shape[-2] + 1) // 2, (image.shape[-1] + 1) // 2), mode="bilinear",
                         align_corners=False)


def upsample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, h, w) to ``size`` and blur."""
    return gaussian_blur2d(F.interpolate(image, size=size, mode="bilinear", align_corners=False), (5, 5), (1.0, 1.0),
                           border_type="replicate")


def gaussian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[G_0 = image, G_1, ...] each half the size of the previous (rounded up)."""
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(downsample(pyramid[-1]))
    return pyramid


def laplacian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[L_0, ..., L_{n-2}, G_{n-1}] with L_k = G_k - up(G_{k+1}); :func:`collapse` inverts it exactly."""
    gaussians = gaussian_pyramid(image, levels)
    details = [g - upsample(g_next, tuple(g.shape[-2:])) for g, g_next in zip(gaussians[:-1], gaussians[1:],
                                                                                strict=True)]
    return details + [gaussians[-1]]


def collapse(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Rebuild the image from :func:`laplacian_pyramid` levels."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + upsample(image, tuple(detail.shape[-2:]))
    return image


def fit_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps (B, C, h, w) at ``size``: as they are, averaged down, or bilinearly upsampled. Constant maps of one
    pixel (B, C, 1, 1) stay as they are: they broadcast."""
    if tuple(maps.shape[-2:]) in (tuple(size), (1, 1)):
        return maps
    if maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]:
        factor = maps.shape[-2] // size[0]
        if maps.shape[-2] == factor * size[0] and maps.shape[-1] == factor * size[1]:
            # The same means as adaptive pooling; unlike it, compiles with dynamic shapes (torch.compile).
            return F.avg_pool2d(maps, factor)
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


ACTIVITY_EPSILON = 1e-3
"""Keeps the normalised differences of :func:`activity_logit` finite where both sources are flat or black."""


def activity_logit(band_a: torch.Tensor, band_b: torch.Tensor, base: bool) -> torch.Tensor:
    """Which source is more active in one pyramid band, in [-1, 1] (+1: all a).

    Detail bands compare coefficient magnitudes, (|a| - |b|) / (|a| + |b| + eps): the choice the max-abs
    Laplacian and wavelet priors make, softened. The base band compares intensities, (a - b) / (a + b + eps):
    towards the brighter source, as choose-max does for infrared and CT. Shapes as the bands (any).
    """
    if base:
        return (band_a - band_b) / (band_a + band_b).abs().add(ACTIVITY_EPSILON)
    magnitude_a, magnitude_b = band_a.abs(), band_b.abs()
    return (magnitude_a - magnitude_b) / (magnitude_a + magnitude_b + ACTIVITY_EPSILON)


def mean_levels(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """(B, 2) mean levels of two (B, 1, H, W) images (or bands): what :func:`salience_logit` measures from."""
    return torch.cat([image_a.mean(dim=(-2, -1)), image_b.mean(dim=(-2, -1))], dim=1)


BASE_ACTIVITIES = ("brighter", "salient", "sharper")
"""How the activity prior compares the two sources' base bands: ``"brighter"`` (:func:`activity_logit`),
``"salient"`` (:func:`salience_logit`) or ``"sharper"`` (the detail levels' :func:`consistent_detail_logit`: where
one source is in focus its coarse bands are right too, and averaging them with the other's blurred ones leaves a
blurred ghost of the sharp object around it)."""

SALIENCE_SIGMA = 1.5
"""Gaussian smoothing (in base-band pixels, 5x5 kernel) of the salience maps: one base pixel stands for 2^(L-1)
image pixels, so this spreads a bright object's choice over its surroundings and no base pixel flips alone."""


def salience_logit(base_a: torch.Tensor, base_b: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
    """Which source's base band departs more from its own mean level, in [-1, 1] (+1: all a).

    The base-band rule of two-scale saliency fusion (Bavirisetti and Dhuli 2016), softened like
    :func:`activity_logit`: a bright infrared target on a cool background and bright headlights in a night-time
    visible image both depart far from their own image's mean, so both are kept, where a brighter-source rule
    would keep the infrared's grey road over the headlights and an average would grey both.

    Args:
        base_a, base_b: (B, 1, h, w) base (coarsest) bands of the two sources.
        means: (B, 2) the sources' mean levels; None: the means of the bands themselves. A caller fusing an image
            in tiles passes the whole image's means, so every tile measures salience from the same level.

    Returns:
        (B, 1, h, w) (|a - mean_a| - |b - mean_b|) / (|a - mean_a| + |b - mean_b| + eps), each magnitude
        smoothed by a Gaussian of :data:`SALIENCE_SIGMA`.
    """
    if means is None:
        means = mean_levels(base_a, base_b)
    bands = torch.cat([base_a, base_b], dim=1)
    salience = gaussian_blur2d((bands - means[:, :, None, None].to(bands.dtype)).abs(), (5, 5),
                               (SALIENCE_SIGMA, SALIENCE_SIGMA), border_type="replicate")
    salience_a, salience_b = salience[:, 0:1], salience[:, 1:2]
    return (salience_a - salience_b) / (salience_a + salience_b + ACTIVITY_EPSILON)


CONSISTENT_SIGMA = 2.0
"""Gaussian smoothing (finest-band pixels) of the magnitudes behind :func:`consistent_detail_logit` in models saved
before the U-Net's ``consistency_sigma`` (the default preset's is 5)."""


def consistent_detail_logit(finest_a: torch.Tensor, finest_b: torch.Tensor, sigma: float = CONSISTENT_SIGMA,
                            epsilon: float | torch.Tensor = ACTIVITY_EPSILON) -> torch.Tensor:
    """One choice for every detail level: which source's finest band is stronger over a neighbourhood, in [-1, 1].

    The per-band choice of :func:`activity_logit` can take an edge's fine part from one source and its coarser
    parts from the other, so the fused edge matches neither source's orientation and strength (what Qabf
    measures). GFF avoids this by deciding from smoothed saliency; this is that decision, softened:
    (S_a - S_b) / (S_a + S_b + eps) with S the finest band's magnitude smoothed by a Gaussian of ``sigma``
    pixels.

    Args:
        finest_a, finest_b: (B, 1, H, W) finest Laplacian bands of the two sources.
        sigma: the smoothing, in finest-band pixels.
        epsilon: added to the denominator, in the bands' units (luminance in [0, 1]); one value or (B,) one per
            item. Larger values pull the choice towards an even mix where both finest bands are weak (flat or noisy
            regions), which keeps the similarity to both sources there, and leave it decisive at edges.

    Returns:
        (B, 1, H, W); :func:`blend_pyramids` fits it to each detail level's size.
    """
    size = int(2 * round(3 * sigma) + 1)
    smooth = gaussian_blur2d(torch.cat([finest_a, finest_b], dim=1).abs(), (size, size), (sigma, sigma),
                             border_type="replicate")
    if isinstance(epsilon, torch.Tensor):
        epsilon = epsilon.to(smooth.dtype).view(-1, 1, 1, 1)
    return (smooth[:, 0:1] - smooth[:, 1:2]) / (smooth[:, 0:1] + smooth[:, 1:2] + epsilon)


def blend_pyramids(image_a: torch.Tensor, image_b: torch.Tensor, logits: torch.Tensor, gains: torch.Tensor,
                   activity_scales: torch.Tensor | None = None, salient_base: torch.Tensor | None = None,
                   source_means: torch.Tensor | None = None,
                   detail_consistency: torch.Tensor | None = None,
                   consistency_epsilon: float | torch.Tensor = ACTIVITY_EPSILON,
                   consistency_sigma: float = CONSISTENT_SIGMA,
                   sharper_base: torch.Tensor | None = None) -> torch.Tensor:
    """Band-wise fusion: per Laplacian level k, w_k a_k + (1 - w_k) b_k, detail levels times a gain g_k.

    Args:
        image_a, image_b: (B, 1, H, W) sources.
        logits: (B, L, h, w) source-a weight logits, one map per level at any resolution (each level uses its
            map averaged down, or bilinearly upsampled, to its own size); L is the number of levels.
        gains: (B, L - 1, h, w) positive gains of the detail levels (1 leaves the contrast as it is).
        activity_scales: optional (B, L); level k's weight is then sigmoid(logit_k + s_k :func:`activity_logit`),
            so the logits are corrections to a max-abs (detail) and brighter-source (base) choice of strength s_k.
        salient_base: optional (B,) bool: items whose base band compares salience (:func:`salience_logit`)
            instead of brightness.
        source_means: optional (B, 2) mean levels of the whole sources for :func:`salience_logit` (None: each
            base band's own mean).
        detail_consistency: optional (B,) weights c in [0, 1]: each detail level's activity is then
            c :func:`consistent_detail_logit` + (1 - c) its own :func:`activity_logit`.
        consistency_epsilon, consistency_sigma: the ``epsilon`` (one value or (B,)) and ``sigma`` of
            :func:`consistent_detail_logit`.
        sharper_base: optional (B,) bool: items whose base band follows :func:`consistent_detail_logit` (the
            source with the stronger finest detail nearby) instead of brightness or salience.

    Returns:
        (B, 1, H, W) the collapsed fused pyramid. With saturated logits (+inf: a, -inf: b), no activity scales
        and every gain 1 it is that source itself.
    """
    levels = logits.shape[1]
    if gains.shape[1] != levels - 1:
        raise ValueError(f"{levels} weight maps need {levels - 1} gain maps, got {gains.shape[1]}.")
    # Both sources in one pass: the blur is per channel, and one call on two channels costs little more than one.
    pyramid = laplacian_pyramid(torch.cat([image_a, image_b], dim=1), levels)
    consistent = weight = None  # the consistent map, and its (B, 1, 1, 1) share in the detail levels' activity
    consistent_details = detail_consistency is not None and bool(detail_consistency.any())
    sharper = sharper_base is not None and bool(sharper_base.any())
    if activity_scales is not None and (consistent_details or sharper):
        consistent = consistent_detail_logit(pyramid[0][:, 0:1], pyramid[0][:, 1:2], consistency_sigma,
                                             consistency_epsilon)
        if consistent_details:
            weight = detail_consistency.view(-1, 1, 1, 1).to(consistent.dtype)
    fused = []
    for level, bands in enumerate(pyramid):
        size = tuple(bands.shape[-2:])
        band_a, band_b = bands[:, 0:1], bands[:, 1:2]
        logit = fit_maps(logits[:, level : level + 1], size)
        if activity_scales is not None:
            scale = activity_scales[:, level].view(-1, 1, 1, 1)
            prior = activity_logit(band_a, band_b, base=level == levels - 1)
            if level == levels - 1:
                if salient_base is not None and bool(salient_base.any()):
                    salient = salience_logit(band_a, band_b, source_means)
                    prior = torch.where(salient_base.view(-1, 1, 1, 1), salient, prior)
                if sharper:
                    prior = torch.where(sharper_base.view(-1, 1, 1, 1), fit_maps(consistent, size), prior)
            elif weight is not None:
                prior = weight * fit_maps(consistent, size) + (1 - weight) * prior
            logit = logit + scale * prior
        band = band_b + torch.sigmoid(logit) * (band_a - band_b)
        if level < levels - 1:
            band = band * fit_maps(gains[:, level : level + 1], size)
        fused.append(band)
    return collapse(fused)


def activity_fusion(image_a: torch.Tensor, image_b: torch.Tensor, scales: torch.Tensor,
                    gains: torch.Tensor | None = None, salient_base: bool = False,
                    detail_consistency: float = 0.0, consistency_epsilon: float = ACTIVITY_EPSILON,
                    consistency_sigma: float = CONSISTENT_SIGMA, sharper_base: bool = False) -> torch.Tensor:
    """The activity prior alone (logits 0): what an untrained activity-prior head fuses.

    Args:
        image_a, image_b: (B, 1, H, W) luminances in [0, 1].
        scales: (L,) or (B, L) strengths per level (the last is the base); L levels.
        gains: optional (L - 1,) or (B, L - 1) detail gains (the head's starting gains; default 1).
        salient_base: the base band compares salience (:func:`salience_logit`, from the images' own means)
            instead of brightness.
        detail_consistency: weight of :func:`consistent_detail_logit` in the detail levels' activity (0: none).
        consistency_epsilon, consistency_sigma: that map's ``epsilon`` and ``sigma``.
        sharper_base: the base band follows that map too (instead of brightness or salience).

    Returns:
        (B, 1, H, W) in [0, 1].
    """
    levels = scales.shape[-1]
    gains = torch.ones(1, levels - 1) if gains is None else gains.reshape(-1, levels - 1)
    return blend_pyramids(image_a, image_b, torch.zeros(1, levels, 1, 1), gains[:, :, None, None],
                          scales.reshape(-1, levels), torch.full((len(image_a),), salient_base),
                          mean_levels(image_a, image_b),
                          torch.full((len(image_a),), float(detail_consistency)), consistency_epsilon,
                          consistency_sigma, torch.full((len(image_a),), sharper_base)).clamp(0, 1)
