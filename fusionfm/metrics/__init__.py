"""Fusion metrics: the twelve of the field's evaluator (:mod:`fusionfm.metrics.fusion`) and MEF-SSIM of a fused
image against an exposure sequence (:mod:`fusionfm.metrics.mef_ssim`). Label making, evaluation and training all
measure with these; none of them is imported here."""

from .fusion import HIGHER_IS_BETTER, METRIC_NAMES, fusion_metrics, to_gray_255
from .mef_ssim import mef_ssim

__all__ = ["HIGHER_IS_BETTER", "METRIC_NAMES", "fusion_metrics", "mef_ssim", "to_gray_255"]
