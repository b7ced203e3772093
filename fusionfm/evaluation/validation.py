"""The validation split and the benchmark-aligned score every recipe choice is made on.

``validation_split.csv`` (package data; written by ``scripts/reproduce/validation_split.py``) fixes the pairs:
held-out training pairs of the IVF and MIF sets, held-out synthetic MEF/MFF pairs, and real exposure and focus
brackets that no test split holds. The test splits are only for the final tables.

:func:`benchmark_score` is aligned with how the benchmarks rank methods (mean rank over the nine metrics of
:data:`~fusionfm.evaluation.ranking.RANKED_METRICS`): per metric, the share of the task's built-in priors that
the fused image beats (ties count half), averaged over the nine metrics. 1.0 beats every built-in prior on
every metric; 0.5 is the middle of the field. Unlike a ratio to the plain average, it does not reward staying
close to the average.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..color import luminance
from ..image_processor import FusionImageProcessor
from ..metrics.fusion import to_gray_255
from ..priors import priors_for, run_prior
from ..synthetic import SyntheticPairs
from ..tasks import FusionTask, get_task
from .ranking import RANKED_METRICS, ranked_metrics

SPLIT_FILE = Path(__file__).with_name("validation_split.csv")


@dataclass
class ValidationPair:
    """A validation pair as luminance at the validation size, (1, 1, h, w) in [0, 1], with the nine metrics of
    every built-in prior of its task (computed once)."""

    task: FusionTask
    dataset: str
    stem: str
    image_a: torch.Tensor
    image_b: torch.Tensor
    prior_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def validation_keys(task: str | FusionTask | None = None, split_file: Path = SPLIT_FILE) -> set[tuple[str, str]]:
    """(dataset, stem) of the validation pairs (of one task family, or all); training leaves these out."""
    family = get_task(task).family if task is not None else None
    with Path(split_file).open(newline="") as handle:
        return {(row["dataset"], row["stem"]) for row in csv.DictReader(handle)
                if family is None or get_task(row["task"]).family == family}


def validation_images(data_root: str | Path, task: str | FusionTask, count: int | None = None,
                      split_file: Path = SPLIT_FILE) -> Iterator[tuple[dict[str, str], FusionTask, torch.Tensor,
                                                                       torch.Tensor, torch.Tensor | None]]:
    """The validation pairs of a task family at their own size (the first ``count`` in the file's order, all for
    None): (the split file's row, the pair's task, image a, image b as (C, H, W) in [0, 1], and the truth photograph
    of a synthetic pair, else None). Synthetic pairs are made exactly as the label builder makes them."""
    family = get_task(task).family
    with Path(split_file).open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if get_task(row["task"]).family == family][:count]
    processor, root = FusionImageProcessor(), Path(data_root)
    synthetic, index = None, {}
    for row in rows:
        pair_task = get_task(row["task"])
        if row["path_a"]:
            yield row, pair_task, processor.load(root / row["path_a"]), processor.load(root / row["path_b"]), None
            continue
        if synthetic is None:
            synthetic = SyntheticPairs(root, family, "train", seed=0)
            index = {made_row["stem"]: i for i, made_row in enumerate(synthetic.rows)}
        made = synthetic[index[row["stem"]]]
        yield row, pair_task, made.image_a, made.image_b, made.ground_truth


def validation_pairs(data_root: str | Path, task: str | FusionTask, resolution: int | None = 256,
                     count: int | None = None, split_file: Path = SPLIT_FILE) -> list[ValidationPair]:
    """The validation pairs of a task family (the first ``count`` in the file's order, all for None), their long
    side resized to ``resolution``, with their priors' metrics."""
    processor = FusionImageProcessor()
    pairs = []
    for row, pair_task, image_a, image_b, _ in validation_images(data_root, task, count, split_file):
        size = processor.processing_size(tuple(image_a.shape[-2:]), resolution)
        y_a, y_b = (processor.resize(luminance(image[None]), size) for image in (image_a, image_b))
        pairs.append(scored_pair(pair_task, row["dataset"], row["stem"], y_a, y_b))
    return pairs


def scored_pair(task: FusionTask, dataset: str, stem: str, y_a: torch.Tensor, y_b: torch.Tensor) -> ValidationPair:
    """A pair of luminances (1, 1, h, w) in [0, 1] with its task's built-in priors run and measured, ready for
    :func:`benchmark_score` (also for training pairs, e.g. to choose labels by the same score)."""
    gray_a, gray_b = to_gray_255(y_a), to_gray_255(y_b)
    metrics = {prior.name: ranked_metrics(run_prior(prior.name, y_a, y_b, task), gray_a, gray_b)
               for prior in priors_for(task)}
    return ValidationPair(task, dataset, stem, y_a, y_b, metrics)


def benchmark_score(fused: torch.Tensor, pair: ValidationPair) -> float:
    """Share of the built-in priors that ``fused`` (1, 1, h, w) beats, averaged over the nine metrics, in [0, 1]."""
    ours = ranked_metrics(fused, to_gray_255(pair.image_a), to_gray_255(pair.image_b))
    shares = []
    for metric in RANKED_METRICS:
        others = [metrics[metric] for metrics in pair.prior_metrics.values()]
        beaten = sum(1.0 if ours[metric] > value else 0.5 if ours[metric] == value else 0.0 for value in others)
        shares.append(beaten / len(others))
    return sum(shares) / len(shares)


NEAR_COPY_LEVELS = 2.0
"""A fusion nearer than this to one of its sources (:func:`distance_to_nearer_source`, grey levels 0-255) is a
near-copy of it. :func:`benchmark_score` can reward one (where a source already beats the priors on most metrics), so
validation reports count them (``scripts/reports/validation_scores.py``), as the bundled-model tests do for the
examples. A count is a reason to look at the images, not a verdict: for MRI-PET and MRI-SPECT the colour carries the
functional image, so a luminance near the MRI's can still be a fusion."""

CHOICE_LEVELS = 10.0
"""Sources differing by more than this many grey levels at a pixel leave fusion a choice there."""


def distance_to_nearer_source(fused: torch.Tensor, pair: ValidationPair) -> float:
    """Mean absolute difference in grey levels (0-255) between ``fused`` (1, 1, h, w) in [0, 1] and the nearer of
    the two sources, over the pixels where the sources differ by more than :data:`CHOICE_LEVELS` (where fusion has
    a choice; elsewhere every method agrees). ``inf`` where the sources never differ that much."""
    fused_y, a_y, b_y = (to_gray_255(image).double() for image in (fused, pair.image_a, pair.image_b))
    choice = (a_y - b_y).abs() > CHOICE_LEVELS
    if not choice.any():
        return float("inf")
    return min(float((fused_y - source).abs()[choice].mean()) for source in (a_y, b_y))


def best_prior_mean(pairs: list[ValidationPair], metric: str) -> tuple[str, float]:
    """The built-in prior with the highest mean ``metric`` over ``pairs`` (one task family), and that mean: the
    issue-14 clause's "best built-in prior" on validation."""
    means = {name: sum(pair.prior_metrics[name][metric] for pair in pairs) / len(pairs)
             for name in pairs[0].prior_metrics}
    best = max(means, key=means.get)
    return best, means[best]


@torch.no_grad()
def validation_fusions(pipeline, pairs: list[ValidationPair],
                       compute_dtype: torch.dtype | str | None = None) -> list[torch.Tensor]:
    """A pipeline's one-step fusions of ``pairs`` at their validation size, as luminance (1, 1, h, w) in [0, 1]."""
    return [luminance(pipeline(pair.image_a, pair.image_b, task=pair.task, processing_resolution=0,
                               compute_dtype=compute_dtype, output_type="pt", show_progress_bar=False).images)
            for pair in pairs]


def validation_quality(pipeline, pairs: list[ValidationPair], compute_dtype: torch.dtype | str | None = None) -> float:
    """Mean :func:`benchmark_score` of a pipeline's one-step fusions of ``pairs``."""
    fusions = validation_fusions(pipeline, pairs, compute_dtype)
    return sum(benchmark_score(fused, pair) for fused, pair in zip(fusions, pairs, strict=True)) / len(pairs)
