"""Pseudo-labels no worse than the network's starting point (issue 14): the activity prior's own fusion, or
variants of it, where they beat the label.

The activity prior's fusion is the pyramid head with zero network logits (:func:`fusionfm.pyramid.activity_fusion`
with the task's starting strengths and gains). Two ways to choose, both on copies at most 256 px on the long side:

- ``--select head-to-head`` (the session-10 labels): the prior's fusion replaces the label when it is higher on
  more than half of the nine ranked metrics.
- ``--select score``: the candidates are the label and the activity prior at every combination of
  ``--base_strengths`` and ``--gains`` (and, with ``--finest_gains``, of those gains with the finest detail level's
  gain replaced); the one with the highest benchmark-aligned score
  (:func:`fusionfm.evaluation.validation.benchmark_score`: the share of the task's built-in priors beaten, as
  every recipe is chosen on the validation split) becomes the label. A label chosen per pair, so the network can
  learn which variant suits which content. With ``--variants_only`` the label itself is not a candidate. With
  ``--region_merge K`` one more candidate: the K highest-scoring ones merged region by region
  (:func:`fusionfm.labels.regions.region_select`, the issue's "labels better than any single prior").

Trains with ``training/train.py --labels TASK=OUT``.

Usage: python scripts/reproduce/activity_labels.py LABELS_DIR OUT_DIR [--select score] [--config JSON]
    [--base_strengths 0,2,4,16] [--gains 1,1.05,1.1,1.15] [--finest_gains 1.3] [--region_merge 4]
    [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import torch

from fusionfm import UNET_PRESETS
from fusionfm.color import luminance
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.evaluation.validation import benchmark_score, scored_pair
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.labels.regions import region_select
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.pyramid import activity_fusion
from fusionfm.training.datasets import LabelledPair, relabel_folder
from fusionfm.unet import start_prior

SCORING_SIZE = 256


def _floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--select", choices=("head-to-head", "score"), default="head-to-head")
    parser.add_argument("--config", type=Path, default=None,
                        help="U-Net config JSON with activity_scales (default: the default preset's)")
    parser.add_argument("--base_strengths", type=_floats, default=[0.0, 2.0, 4.0, 16.0],
                        help="(--select score) base-level strengths of the candidates, comma-separated")
    parser.add_argument("--gains", type=_floats, default=[1.0, 1.05, 1.1, 1.15],
                        help="(--select score) uniform detail gains of the candidates, comma-separated")
    parser.add_argument("--finest_gains", type=_floats, default=[],
                        help="(--select score) also each candidate with its finest detail level at each of these gains")
    parser.add_argument("--variants_only", action="store_true",
                        help="(--select score) the existing label is not a candidate: every label becomes a variant")
    parser.add_argument("--region_merge", type=int, default=0, metavar="K",
                        help="(--select score) also try the K best candidates merged region by region (0: no)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    config = json.loads(args.config.read_text()) if args.config else UNET_PRESETS["default"]
    processor = FusionImageProcessor()
    choices: Counter[str] = Counter()

    def load_pair(pair: LabelledPair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(luminance(processor.load(path)[None]) for path in (pair.path_a, pair.path_b, pair.path_label))

    def small(image: torch.Tensor) -> torch.Tensor:
        return processor.resize(image, processor.processing_size(tuple(image.shape[-2:]), SCORING_SIZE))

    def prior_where_it_wins(pair: LabelledPair) -> torch.Tensor | None:
        y_a, y_b, label = load_pair(pair)
        ours = activity_fusion(y_a, y_b, **start_prior(config, pair.task.class_id, pair.task.name))
        small_a, small_b = small(y_a), small(y_b)
        gray_a, gray_b = to_gray_255(small_a), to_gray_255(small_b)
        ours_metrics, label_metrics = (ranked_metrics(small(image), gray_a, gray_b) for image in (ours, label))
        wins = sum(ours_metrics[m] > label_metrics[m] for m in RANKED_METRICS)
        return ours[0] if wins * 2 > len(RANKED_METRICS) else None

    def best_by_score(pair: LabelledPair) -> torch.Tensor | None:
        y_a, y_b, label = load_pair(pair)
        reference = scored_pair(pair.task, pair.dataset, pair.stem, small(y_a), small(y_b))
        scored = {} if args.variants_only else {"label": (benchmark_score(small(label), reference), label)}
        start = start_prior(config, pair.task.class_id, pair.task.name)
        for base, gain, finest in itertools.product(args.base_strengths, args.gains, [None, *args.finest_gains]):
            scales, gains = start["scales"].clone(), torch.full_like(start["gains"], gain)
            scales[-1] = base
            if finest is not None:
                gains[0] = finest
            candidate = activity_fusion(y_a, y_b, **{**start, "scales": scales, "gains": gains})
            name = f"base {base:g}, gain {gain:g}" + ("" if finest is None else f", finest {finest:g}")
            scored[name] = (benchmark_score(small(candidate), reference), candidate)
        if args.region_merge > 1:
            top = sorted(scored, key=lambda name: scored[name][0], reverse=True)[:args.region_merge]
            merged = region_select({name: scored[name][1] for name in top}, y_a, y_b, pair.task).label
            scored["region merge"] = (benchmark_score(small(merged), reference), merged)
        choice = max(scored, key=lambda name: scored[name][0])  # the first of equals: the label, then variants
        choices[choice] += 1
        return None if choice == "label" else scored[choice][1][0]

    new_label = best_by_score if args.select == "score" else prior_where_it_wins
    count, replaced = relabel_folder(args.labels_dir, args.out_dir, args.data, new_label)
    print(f"{count} labels in {args.out_dir}; {replaced} replaced by an activity prior's fusion ({args.select}).")
    if choices:
        print("Chosen (labels made in this call):", ", ".join(f"{name} {n}" for name, n in choices.most_common()))


if __name__ == "__main__":
    main()
