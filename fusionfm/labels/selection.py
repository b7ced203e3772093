"""Stage 1 of the pseudo-labels: task-aware selection among candidate fusions of one pair.

Every candidate is scored with the fusion metrics against the pair's sources. Per pair, each metric
is min-max normalised across the candidates (MSE inverted: lower is better), then the normalised
metrics are combined with the task's weights from :data:`SELECTION_WEIGHTS`; the highest score wins.

The weight table (:data:`SELECTION_WEIGHTS`, rows sum to 1) and why:

- IVF: Qabf, VIF (.25 each), MI, SSIM (.15), SD, SF (.10): edges and information of both sources,
  thermal contrast.
- MIF: as IVF with more weight on shared information (MI .20, VIF .20).
- MEF: Qabf, VIF (.50 each): keep the edges and the information that either exposure holds well. Not
  tuned on the synthetic truth: a row tuned so (SSIM .25, CC .20, PSNR .20, SCD .15, MI .10, Qabf .10)
  picked the plain average for 195 of 204 train pairs, the model learned to average, and averaging
  ranks last of eight methods on the real MEFB pairs. On the synthetic pairs the source-referenced
  metrics even rank the average above the truth, so closeness to the truth is the wrong target here.
- MFF: Qabf, VIF, MI, SF, AG (.20 each). Tuned on synthetic train pairs: Qabf/VIF/MI track PSNR to
  the truth (rank correlation .96-.97), and the all-in-focus truth is always the sharpest (SF, AG).

IVF and MIF have no ground truth to tune on; their rows follow the metrics the field reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics.fusion import HIGHER_IS_BETTER, METRIC_NAMES, fusion_metrics, to_gray_255
from ..tasks import FusionTask, get_task

SELECTION_WEIGHTS: dict[str, dict[str, float]] = {
    "IVF": {"Qabf": 0.25, "VIF": 0.25, "MI": 0.15, "SSIM": 0.15, "SD": 0.10, "SF": 0.10},
    "MIF": {"Qabf": 0.25, "VIF": 0.20, "MI": 0.20, "SSIM": 0.15, "SD": 0.10, "SF": 0.10},
    "MEF": {"Qabf": 0.50, "VIF": 0.50},
    "MFF": {"Qabf": 0.20, "VIF": 0.20, "MI": 0.20, "SF": 0.20, "AG": 0.20},
}


@dataclass
class Selection:
    """The outcome of scoring one pair's candidates.

    Args:
        best: name of the winning candidate.
        scores: candidate -> weighted normalised score in [0, 1].
        metrics: candidate -> metric name -> raw value (all twelve metrics).
    """

    best: str
    scores: dict[str, float]
    metrics: dict[str, dict[str, float]]


def candidate_metrics(
    candidates: dict[str, torch.Tensor], image_a: torch.Tensor, image_b: torch.Tensor
) -> dict[str, dict[str, float]]:
    """All twelve metrics of every candidate (1, C, H, W) in [0, 1] against sources (1, C, H, W)."""
    names = list(candidates)
    fused = torch.cat([to_gray_255(candidates[name]) for name in names])
    gray_a = to_gray_255(image_a).expand_as(fused)
    gray_b = to_gray_255(image_b).expand_as(fused)
    values = fusion_metrics(fused, gray_a, gray_b)
    return {name: {metric: float(values[metric][i]) for metric in METRIC_NAMES} for i, name in enumerate(names)}


def weighted_scores(metrics: dict[str, dict[str, float]], weights: dict[str, float]) -> dict[str, float]:
    """Per-pair min-max normalisation of each weighted metric across candidates, then the weighted sum.

    A metric on which all candidates tie contributes 0.5 times its weight to every candidate.
    """
    names = list(metrics)
    scores = torch.zeros(len(names), dtype=torch.float64)
    for metric, weight in weights.items():
        values = torch.tensor([metrics[name][metric] for name in names], dtype=torch.float64)
        if not HIGHER_IS_BETTER[metric]:
            values = -values
        low, high = values.min(), values.max()
        normalised = (values - low) / (high - low) if high > low else torch.full_like(values, 0.5)
        scores += weight * normalised
    return {name: float(score) for name, score in zip(names, scores, strict=True)}


def select(
    candidates: dict[str, torch.Tensor], image_a: torch.Tensor, image_b: torch.Tensor, task: str | FusionTask,
    weights: dict[str, float] | None = None,
) -> Selection:
    """Score every candidate fusion of one pair and pick the best for the task.

    Args:
        candidates: name -> fused image (1, C, H, W) in [0, 1], same size as the sources.
        image_a, image_b: the sources (1, C, H, W) in [0, 1].
        task: the task (its family picks the weight row).
        weights: overrides the task's row of :data:`SELECTION_WEIGHTS`.
    """
    if not candidates:
        raise ValueError("select() needs at least one candidate.")
    size = tuple(image_a.shape[-2:])
    for name, image in candidates.items():
        if tuple(image.shape[-2:]) != size:
            raise ValueError(f"Candidate {name!r} is {tuple(image.shape[-2:])}, the sources are {size}.")
    weights = weights or SELECTION_WEIGHTS[get_task(task).family]
    unknown = set(weights) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"Unknown metrics in weights: {sorted(unknown)}; known: {', '.join(METRIC_NAMES)}.")
    metrics = candidate_metrics(candidates, image_a, image_b)
    scores = weighted_scores(metrics, weights)
    return Selection(best=max(scores, key=scores.get), scores=scores, metrics=metrics)
