"""Differentiable counterparts of the fusion metrics, for training on pairs that have no reference image.

Each function takes (B, 1, H, W) luminances in [0, 1] (``fused`` differentiable, the sources fixed) and returns the
float32 score per sample and source, (B, 2) (the share of A, the share of B), whose sum over the sources follows the
metric of :mod:`fusionfm.metrics.fusion` of the same name:

- :func:`soft_ssim`: SSIM(F, A) + SSIM(F, B) with the metric's 7x7 box windows, sample covariance and constants
  (``data_range=2`` on the 0-255 scale); equal to it up to float32 rounding;
- :func:`soft_vif`: VIF(A, F) + VIF(B, F), the 4-scale pixel-domain VIF with the metric's Gaussian windows and
  noise variance, its masks as multiplications; equal up to float32 rounding;
- :func:`soft_qabf`: Qabf with the metric's Sobel operators, zero padding, arctan orientations and sigmoids;
  equal up to float32 rounding;
- :func:`soft_mi`: MI(F, A) + MI(F, B) from joint histograms with ``bins`` bins whose counts are shared linearly
  between neighbouring bins (Parzen windowing), so that moving a pixel's value moves the histogram smoothly; its
  level differs from the metric's 256-bin MI, its direction agrees.
- :func:`soft_mef_ssim`: MEF-SSIM (:mod:`fusionfm.metrics.mef_ssim`) of a fused image against its frames, (B,).

Split by source, a fusion that copies one source and drops the other shows as one share rising and one falling
(the sums reward it: MI and VIF of a copy of the richer source are high).

The metrics are computed on sources in the whole image; training computes them on crops, so their values differ
from the whole-image metrics by border effects; only their changes matter to the gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..metrics.mef_ssim import mef_ssim_terms


def _float32(*images: torch.Tensor) -> list[torch.Tensor]:
    return [image.float() for image in images]


def _box_mean(images: torch.Tensor, size: int) -> torch.Tensor:
    """'valid' mean over size x size windows of every channel of (B, C, H, W)."""
    return F.avg_pool2d(images, size, stride=1)


def soft_ssim(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """SSIM(F, A) and SSIM(F, B) as :func:`fusionfm.metrics.fusion.ssim` (their sum), differentiable in
    ``fused``: (B, 2)."""
    with torch.autocast(fused.device.type, enabled=False):
        fused, image_a, image_b = (255 * image for image in _float32(fused, image_a, image_b))
        c1, c2, cov_norm = (0.01 * 2) ** 2, (0.03 * 2) ** 2, 49 / 48
        stack = torch.cat([fused, image_a, image_b, fused * fused, image_a * image_a, image_b * image_b,
                           fused * image_a, fused * image_b], dim=1)
        uf, ua, ub, uff, uaa, ubb, ufa, ufb = _box_mean(stack, 7).unbind(1)
        per_source = []
        for us, uss, ufs in ((ua, uaa, ufa), (ub, ubb, ufb)):
            numerator = (2 * uf * us + c1) * (2 * cov_norm * (ufs - uf * us) + c2)
            denominator = (uf * uf + us * us + c1) * (cov_norm * (uff - uf * uf + uss - us * us) + c2)
            per_source.append((numerator / denominator).mean(dim=(1, 2)))
        return torch.stack(per_source, dim=1)


def _gaussian_kernel_1d(size: int) -> torch.Tensor:
    """VIF's MATLAB-style Gaussian window factor (sigma = size / 5), normalised."""
    sigma = size / 5.0
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _gaussian_valid(images: torch.Tensor, size: int) -> torch.Tensor:
    """'valid' separable filtering of (B, C, H, W) with VIF's ``size``-tap window."""
    kernel = _gaussian_kernel_1d(size).to(images.device)
    channels = images.shape[1]
    rows = F.conv2d(images, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1).contiguous(), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size).contiguous(), groups=channels)


def soft_vif(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """VIF(A, F) and VIF(B, F) as :func:`fusionfm.metrics.fusion.vif` (their sum), differentiable in ``fused``:
    (B, 2).

    On the 0-255 scale: per scale, local variances s1 (source), s2 (fused) and covariance s12 in Gaussian windows
    of 17, 9, 5 and 3 taps; gain g = s12 / s1 and distortion sv = s2 - g s12; numerator log10(1 + g^2 s1 /
    (sv + 2)) where s12 >= 0, denominator log10(1 + s1 / 2), both where the source varies; ratio of the sums.
    """
    with torch.autocast(fused.device.type, enabled=False):
        images = torch.cat([255 * image for image in _float32(fused, image_a, image_b)], dim=1)
        sigma_nsq, eps = 2.0, 1e-10
        numerators = images.new_zeros(images.shape[0], 2)
        denominators = images.new_zeros(images.shape[0], 2)
        for scale in range(1, 5):
            size = 2 ** (5 - scale) + 1
            if scale > 1:
                images = _gaussian_valid(images, size)[..., ::2, ::2]
            f, sources = images[:, :1], images[:, 1:]
            means = _gaussian_valid(images, size)
            mean_f, mean_s = means[:, :1], means[:, 1:]
            var_f = _gaussian_valid(f * f, size) - mean_f * mean_f
            var_s = _gaussian_valid(sources * sources, size) - mean_s * mean_s
            cov = _gaussian_valid(sources * f, size) - mean_s * mean_f
            var_s, var_f = var_s.clamp_min(0), var_f.clamp_min(0)
            informative = (var_s >= eps).float()
            kept = informative * (var_f >= eps).float() * (cov >= 0).float()
            g = cov / (var_s + eps)
            sv = (var_f - g * cov).clamp_min(eps)
            numerators += (torch.log1p(g * g * var_s / (sv + sigma_nsq)) * kept).sum(dim=(2, 3))
            denominators += (torch.log1p(var_s / sigma_nsq) * informative).sum(dim=(2, 3))
        return numerators / denominators.clamp_min(1e-12)


def _sobel_strength_and_angle(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The metric's 3x3 Sobel strength and orientation arctan(gy / gx) of (B, 1, H, W) on the 0-255 scale, with
    zero padding (scipy's convolve2d 'same'); the orientation is pi / 2, without gradient, where gx is 0."""
    padded = F.pad(image, (1, 1, 1, 1))
    height, width = image.shape[-2:]

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    smooth_rows = F.pad(shifted(-1, 0) + 2 * shifted(0, 0) + shifted(1, 0), (1, 1))
    gx = smooth_rows[..., :width] - smooth_rows[..., 2:]
    smooth_columns = F.pad(shifted(0, -1) + 2 * shifted(0, 0) + shifted(0, 1), (0, 0, 1, 1))
    gy = smooth_columns[..., 2:, :] - smooth_columns[..., :height, :]
    strength = torch.sqrt(gx * gx + gy * gy + 1e-6)
    vertical = gx.abs() < 1e-6
    angle = torch.where(vertical, math.pi / 2, torch.atan(gy / torch.where(vertical, 1.0, gx)))
    return strength, angle


def soft_qabf(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Qabf (Xydeas and Petrovic 2000) as :func:`fusionfm.metrics.fusion.qabf`, differentiable in ``fused``,
    split by source: (B, 2), the edge preservation of A's and of B's edges, each weighted by its own strength over
    both sources' total (their sum is Qabf).

    Per pixel and source S, Q^{SF} = 0.9994 sigmoid(15 (G - 0.5)) 0.9879 sigmoid(22 (A - 0.8)) with G the ratio of
    the smaller to the larger Sobel strength of S and F and A = 1 - 2 |alpha_S - alpha_F| / pi (alpha = arctan(gy
    / gx)), averaged with the weights g_S over both sources, on the 0-255 scale with the metric's zero padding.
    ``border``: pixels left out at every side. The zero padding makes an image's outermost ring a strong edge in
    every source and fusion alike; on a training crop that ring weighs far more than on a whole image, so the
    objective leaves it out (``border=1``).
    """
    # float32 even under bf16 autocast: the strength ratios and angles of weak edges need it.
    with torch.autocast(fused.device.type, enabled=False):
        g_f, angle_f = _sobel_strength_and_angle(255 * fused.float())
        preserved_sums, weights = [], []
        for source in (image_a, image_b):
            g_s, angle_s = _sobel_strength_and_angle(255 * source.float())
            ratio = torch.minimum(g_s, g_f) / torch.maximum(g_s, g_f)
            alignment = 1 - (angle_s - angle_f).abs() * (2 / math.pi)
            preserved = torch.sigmoid(15 * (ratio - 0.5)) * torch.sigmoid(22 * (alignment - 0.8)) * (0.9994 * 0.9879)
            inside = (..., slice(border, g_s.shape[-2] - border), slice(border, g_s.shape[-1] - border))
            preserved_sums.append((preserved * g_s)[inside].sum(dim=(1, 2, 3)))
            weights.append(g_s[inside].sum(dim=(1, 2, 3)))
        return torch.stack(preserved_sums, dim=1) / torch.stack(weights, dim=1).sum(dim=1, keepdim=True)


def _bin_weights(image: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> (B, H*W, bins): each pixel's count shared linearly between its two nearest bins."""
    position = image.clamp(0, 1).flatten(1) * (bins - 1)
    lower = position.detach().floor().clamp(max=bins - 2)
    upper_share = position - lower
    weights = image.new_zeros(*position.shape, bins)
    weights.scatter_add_(2, lower.long()[..., None], (1 - upper_share)[..., None])
    weights.scatter_add_(2, lower.long()[..., None] + 1, upper_share[..., None])
    return weights


def _mutual_information(weights_x: torch.Tensor, weights_y: torch.Tensor) -> torch.Tensor:
    """MI (nats) of the soft joint histogram of two images given as :func:`_bin_weights`: (B,)."""
    joint = weights_x.transpose(1, 2) @ weights_y / weights_x.shape[1]
    marginal_x, marginal_y = joint.sum(dim=2, keepdim=True), joint.sum(dim=1, keepdim=True)
    ratio = joint / (marginal_x * marginal_y).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum(dim=(1, 2))


def soft_mi(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """MI(F, A) and MI(F, B) in nats from ``bins``-bin Parzen joint histograms, differentiable in ``fused``:
    (B, 2)."""
    with torch.autocast(fused.device.type, enabled=False):
        fused, image_a, image_b = _float32(fused, image_a, image_b)
        weights_f = _bin_weights(fused, bins)
        return torch.stack([_mutual_information(weights_f, _bin_weights(image_a, bins)),
                            _mutual_information(weights_f, _bin_weights(image_b, bins))], dim=1)


def soft_mef_ssim(fused: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """MEF-SSIM of fused luminances (B, 1, H, W) against their frames (B, K, H, W), both in [0, 1]: (B,).

    :func:`fusionfm.metrics.mef_ssim.mef_ssim` per item, differentiable in ``fused`` (its reference-frame choice
    and weights depend on the frames only).
    """
    with torch.autocast(fused.device.type, enabled=False):
        fused, frames = _float32(fused, frames)
        return torch.stack([mef_ssim_terms(fused[i : i + 1], frames[i][:, None]) for i in range(len(fused))])
