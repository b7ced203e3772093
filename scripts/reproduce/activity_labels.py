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
import shutil
from pathlib import Path

import torch

from fusionfm import UNET_PRESETS
from fusionfm.atomic import save_png_atomic
from fusionfm.color import luminance
from fusionfm.evaluation.metrics import to_gray_255
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.pyramid import blend_pyramids
from fusionfm.training.datasets import LabelledPairs

SCORING_SIZE = 256


def activity_fusion(y_a: torch.Tensor, y_b: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) luminances -> the activity prior's fusion, (1, 1, H, W) in [0, 1]."""
    levels = scales.shape[-1]
    return blend_pyramids(y_a, y_b, torch.zeros(1, levels, 1, 1), torch.ones(1, levels - 1, 1, 1),
                          scales.view(1, -1)).clamp(0, 1)


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
    pairs = LabelledPairs(args.labels_dir, args.data)
    processor = FusionImageProcessor()
    replaced = 0
    for pair in pairs.pairs:
        target = args.out_dir / pair.dataset / f"{pair.stem}.png"
        if target.is_file():
            continue
        y_a, y_b = (luminance(processor.load(path)[None]) for path in (pair.path_a, pair.path_b))
        label = luminance(processor.load(pair.path_label)[None])
        ours = activity_fusion(y_a, y_b, table[pair.task.class_id])
        size = processor.processing_size(tuple(y_a.shape[-2:]), SCORING_SIZE)
        small = [processor.resize(image, size) for image in (y_a, y_b, ours, label)]
        gray_a, gray_b = to_gray_255(small[0]), to_gray_255(small[1])
        ours_metrics, label_metrics = (ranked_metrics(image, gray_a, gray_b) for image in small[2:])
        wins = sum(ours_metrics[m] > label_metrics[m] for m in RANKED_METRICS)
        if wins * 2 > len(RANKED_METRICS):
            save_png_atomic(ours[0], target)
            replaced += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pair.path_label, target)
    for sources in args.labels_dir.glob("*/sources"):
        shutil.copytree(sources, args.out_dir / sources.parent.name / "sources", dirs_exist_ok=True)
    shutil.copyfile(args.labels_dir / "labels.csv", args.out_dir / "labels.csv")
    print(f"{len(pairs)} labels in {args.out_dir}; {replaced} replaced by the activity prior's fusion.")


if __name__ == "__main__":
    main()
