"""Pseudo-labels that keep the activity prior where it beats the label: the "labels no worse than the network's
starting point" experiment of issue 14.

For every labelled pair, the activity prior's own fusion (the pyramid head with zero network logits and unit
gains: :func:`fusionfm.pyramid.blend_pyramids` with the task's starting strengths of the default preset) is set
against the existing label on the nine ranked metrics (on copies at most 256 px on the long side); it replaces
the label when it is higher on more than half of them. Trains with ``training/train.py --labels TASK=OUT``.

Usage: python scripts/reproduce/activity_labels.py LABELS_DIR OUT_DIR [--config JSON] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fusionfm import UNET_PRESETS
from fusionfm.color import luminance
from fusionfm.evaluation.metrics import to_gray_255
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.pyramid import activity_fusion
from fusionfm.training.datasets import LabelledPair, relabel_folder

SCORING_SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", type=Path, default=None,
                        help="U-Net config JSON with activity_scales (default: the default preset's)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    config = json.loads(args.config.read_text()) if args.config else UNET_PRESETS["default"]
    table = torch.tensor(config["activity_scales"])
    processor = FusionImageProcessor()

    def prior_where_it_wins(pair: LabelledPair) -> torch.Tensor | None:
        y_a, y_b = (luminance(processor.load(path)[None]) for path in (pair.path_a, pair.path_b))
        label = luminance(processor.load(pair.path_label)[None])
        ours = activity_fusion(y_a, y_b, table[pair.task.class_id])
        size = processor.processing_size(tuple(y_a.shape[-2:]), SCORING_SIZE)
        small = [processor.resize(image, size) for image in (y_a, y_b, ours, label)]
        gray_a, gray_b = to_gray_255(small[0]), to_gray_255(small[1])
        ours_metrics, label_metrics = (ranked_metrics(image, gray_a, gray_b) for image in small[2:])
        wins = sum(ours_metrics[m] > label_metrics[m] for m in RANKED_METRICS)
        return ours[0] if wins * 2 > len(RANKED_METRICS) else None

    count, replaced = relabel_folder(args.labels_dir, args.out_dir, args.data, prior_where_it_wins)
    print(f"{count} labels in {args.out_dir}; {replaced} replaced by the activity prior's fusion.")


if __name__ == "__main__":
    main()
