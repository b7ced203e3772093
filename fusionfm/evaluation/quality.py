"""The earlier quality score (training reported it in R[i][j] before the validation split's benchmark score,
:mod:`fusionfm.evaluation.validation`, replaced it); kept for the ablation tables of ``scripts/reports``.

``quality_score``: the mean of Qabf, SSIM and VIF of the fused image, each divided by the same metric of
the plain average (a + b) / 2 of the pair. 1.0 means "as good as averaging"; the three metrics measure edge
transfer (Qabf), structure (SSIM) and information fidelity (VIF) with respect to both sources, and the
ratio puts tasks of different difficulty on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..color import luminance
from ..datasets import find_pairs, load_pair
from ..image_processor import FusionImageProcessor
from ..tasks import FusionTask, get_task
from .baseline import average_255
from .metrics import qabf, ssim, to_gray_255, vif

QUALITY_METRICS = {"Qabf": qabf, "SSIM": ssim, "VIF": vif}


def quality_score(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Quality relative to plain averaging for luminances (B, 1, H, W) in [0, 1]: (B,) float64."""
    fused, image_a, image_b = (to_gray_255(image) for image in (fused, image_a, image_b))
    average = average_255(image_a, image_b)
    ratios = [metric(fused, image_a, image_b) / metric(average, image_a, image_b).clamp_min(1e-12)
              for metric in QUALITY_METRICS.values()]
    return torch.stack(ratios).mean(0)


@dataclass
class EvaluationPair:
    """A test pair as luminance at the evaluation size: (1, 1, h, w) in [0, 1]."""

    task: FusionTask
    dataset: str
    stem: str
    image_a: torch.Tensor
    image_b: torch.Tensor


def evaluation_pairs(data_root: str | Path, task: str, count: int, resolution: int | None = 256,
                     split: str = "test") -> list[EvaluationPair]:
    """A fixed, small test set of a task: ``count`` pairs taken in turn from each data set (sorted by stem),
    resized so the long side is ``resolution`` (None keeps the size)."""
    pairs = find_pairs(data_root, task, split)
    by_dataset: dict[str, list] = {}
    for pair in pairs:
        by_dataset.setdefault(pair.dataset, []).append(pair)
    chosen, queues = [], [list(group) for group in by_dataset.values()]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    processor = FusionImageProcessor()
    result = []
    for pair in chosen:
        image_a, image_b = load_pair(pair, processor)
        size = processor.processing_size(tuple(image_a.shape[-2:]), resolution)
        result.append(EvaluationPair(get_task(pair.task), pair.dataset, pair.stem,
                                     processor.resize(luminance(image_a), size),
                                     processor.resize(luminance(image_b), size)))
    return result


@torch.no_grad()
def task_quality(pipeline, pairs: list[EvaluationPair], num_inference_steps: int = 1,
                 compute_dtype: torch.dtype | str | None = None) -> float:
    """Mean :func:`quality_score` of a pipeline's fusions of ``pairs``."""
    scores = []
    for pair in pairs:
        fused = pipeline(pair.image_a, pair.image_b, task=pair.task, num_inference_steps=num_inference_steps,
                         processing_resolution=0, compute_dtype=compute_dtype, output_type="pt",
                         show_progress_bar=False).images
        scores.append(float(quality_score(luminance(fused), pair.image_a, pair.image_b)[0]))
    return sum(scores) / len(scores)
