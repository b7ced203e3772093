"""Validation scores of the activity prior alone (no network): the first table of docs/quality.md's activity section.

    python scripts/experiments/activity_prior_grid.py [--data ../shared/data]

Each row blends the validation pairs' Laplacian pyramids with logits 0, gains 1 and the row's activity strengths
(:func:`fusionfm.pyramid.activity_fusion`), scored with :func:`fusionfm.evaluation.validation.benchmark_score`.
The last row runs the pipeline with an untrained U-Net of ``configs/activity_prior.json`` (its output layer starts
at zero), so it includes the border margin. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline, build_unet
from fusionfm.evaluation.validation import benchmark_score, validation_pairs, validation_quality
from fusionfm.pyramid import activity_fusion
from fusionfm.tasks import FAMILIES

CONFIG = Path(__file__).with_name("configs") / "activity_prior.json"
ROWS = [  # (levels, detail strength, base strength)
    (4, 1000.0, 0.0), (4, 16.0, 0.0), (4, 4.0, 0.0), (5, 16.0, 0.0),
    (5, 16.0, 2.0), (5, 16.0, 4.0), (5, 16.0, 16.0), (5, 16.0, -4.0),
]


def prior_only(a: torch.Tensor, b: torch.Tensor, levels: int, detail: float, base: float) -> torch.Tensor:
    return activity_fusion(a, b, torch.tensor([detail] * (levels - 1) + [base]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    pairs = {family: validation_pairs(args.data, family, 256) for family in FAMILIES}
    print("| activity prior, no network | " + " | ".join(FAMILIES) + " | mean |\n|---|" + "---:|" * 5)
    for levels, detail, base in ROWS:
        scores = [sum(benchmark_score(prior_only(p.image_a, p.image_b, levels, detail, base), p) for p in pairs[f])
                  / len(pairs[f]) for f in FAMILIES]
        print(f"| {levels} levels, strength {detail:g}, base {base:g} | " + " | ".join(f"{x:.3f}" for x in scores)
              + f" | {sum(scores) / len(scores):.3f} |", flush=True)
    pipeline = FusionFMPipeline.from_pretrained(Path(__file__).parents[2] / "fusionfm" / "default_model")
    pipeline.unet = build_unet("default", **json.loads(CONFIG.read_text())).eval()
    pipeline.set_progress_bar_config(disable=True)
    scores = [validation_quality(pipeline, pairs[f], "fp32") for f in FAMILIES]
    print(f"| {CONFIG.name}, untrained U-Net, pipeline | " + " | ".join(f"{x:.3f}" for x in scores)
          + f" | {sum(scores) / len(scores):.3f} |")


if __name__ == "__main__":
    main()
