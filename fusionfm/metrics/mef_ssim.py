"""MEF-SSIM (Ma, Zeng and Wang, IEEE TIP 2015): the quality of one fused image against a whole exposure sequence.

The conventions are those of the widely used single-scale PyTorch implementation of MEF-Net (Ma et al., TIP
2019), which the reference values in ``shared/golden/mef_ssim_reference.csv`` follow:

- gray Y = 0.299 R + 0.587 G + 0.114 B of the 8-bit image / 255, not rounded;
- an 11 x 11 Gaussian window, sigma = 11 / 6, sum 1, zero padding of 5 (maps keep the image size); biased local
  variances E[Y^2] - mu^2; C1 = 0.01^2, C2 = 0.03^2;
- contrast and structure: per pixel, the frame with the largest local variance is the reference,
  cs = (2 sigma_FR + C2) / (sigma_F^2 + sigma_R^2 + C2);
- luminance: the target local mean is the frames' local means weighted by exp(-(m_k - 0.5)^2 / 0.08) *
  exp(-(mu_k - 0.5)^2 / 0.08) (m_k: the image-wide mean of frame k's local means),
  l = (2 mu_F mu_T + C1) / (mu_F^2 + mu_T^2 + C1);
- the score is mean(l) * mean(cs).

Computed in float32, as the reference was (float64 filtering is several times slower on CPUs and agrees with the
reference values no better).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..color import luminance

WINDOW_SIZE = 11
WINDOW_SIGMA = 11 / 6
C1, C2 = 0.01**2, 0.03**2


def _window() -> torch.Tensor:
    coordinates = torch.arange(WINDOW_SIZE, dtype=torch.float32) - WINDOW_SIZE // 2
    kernel = torch.exp(-coordinates**2 / (2 * WINDOW_SIGMA**2))
    kernel = torch.outer(kernel, kernel)
    return (kernel / kernel.sum()).view(1, 1, WINDOW_SIZE, WINDOW_SIZE)


def _local_mean(images: torch.Tensor) -> torch.Tensor:
    return F.conv2d(images, _window(), padding=WINDOW_SIZE // 2)


def mef_ssim(fused: torch.Tensor, frames: torch.Tensor) -> float:
    """MEF-SSIM of a fused image against its exposure sequence.

    Args:
        fused: (C, H, W) or (1, C, H, W) in [0, 1], C = 1 or 3 (8-bit values / 255 for the reference conventions).
        frames: (K, C, H, W) in [0, 1], the sequence (any order), same size as ``fused``.

    Returns:
        The score in [0, 1] (1: the fused image has every frame's best local structure and the target brightness).
    """
    fused = fused[None] if fused.ndim == 3 else fused
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"frames must be (K, C, H, W) with K >= 2, got shape {tuple(frames.shape)}.")
    if fused.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"The fused image is {tuple(fused.shape[-2:])}, the frames {tuple(frames.shape[-2:])}.")
    return float(mef_ssim_terms(luminance(fused.float()), luminance(frames.float())).double())


def mef_ssim_terms(y_fused: torch.Tensor, y_frames: torch.Tensor) -> torch.Tensor:
    """MEF-SSIM of a fused luminance (1, 1, H, W) against frame luminances (K, 1, H, W), in [0, 1]: a 0-d tensor,
    differentiable in ``y_fused`` (the reference frame and the luminance weights depend on the frames only)."""
    mu_fused, mu_frames = _local_mean(y_fused), _local_mean(y_frames)
    var_fused = _local_mean(y_fused**2) - mu_fused**2
    var_frames = _local_mean(y_frames**2) - mu_frames**2
    covariances = _local_mean(y_frames * y_fused) - mu_frames * mu_fused
    reference = var_frames.argmax(dim=0, keepdim=True)
    var_reference = var_frames.gather(0, reference)
    covariance = covariances.gather(0, reference)
    cs = (2 * covariance + C2) / (var_fused + var_reference + C2)
    global_means = mu_frames.mean(dim=(1, 2, 3), keepdim=True)
    weights = torch.exp(-((global_means - 0.5) ** 2) / 0.08) * torch.exp(-((mu_frames - 0.5) ** 2) / 0.08)
    mu_target = (weights * mu_frames).sum(dim=0, keepdim=True) / weights.sum(dim=0, keepdim=True)
    luminance_term = (2 * mu_fused * mu_target + C1) / (mu_fused**2 + mu_target**2 + C1)
    return luminance_term.mean() * cs.mean()
