"""Validation scores of the activity prior alone (no network): the first table of docs/quality.md's activity section.

    python scripts/experiments/activity_prior_grid.py [--tables strengths,gains,pipeline] [--data ../shared/data]

"strengths": each row blends the validation pairs' Laplacian pyramids with logits 0, gains 1 and the row's activity
strengths (:func:`fusionfm.pyramid.activity_fusion`), scored with
:func:`fusionfm.evaluation.validation.benchmark_score`. "gains": the default preset's strengths per task with a
uniform detail gain per row. "pipeline": the pipeline with an untrained U-Net of each config in ``configs/`` named
below (its output starts at zero), so it includes the border margin. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fusionfm import UNET_PRESETS, FusionFMPipeline, build_unet
from fusionfm.evaluation.validation import benchmark_score, validation_pairs, validation_quality
from fusionfm.pyramid import activity_fusion
from fusionfm.tasks import FAMILIES, get_task
from fusionfm.unet import start_prior

CONFIGS = [Path(__file__).with_name("configs") / name
           for name in ("activity_prior.json", "activity_prior_gains.json")]
GAINS = [1.0, 1.02, 1.03, 1.04, 1.05, 1.07, 1.1, 1.15, 1.2, 1.25]
ROWS = [  # (levels, detail strength, base strength, base rule)
    (4, 1000.0, 0.0, "brighter"), (4, 16.0, 0.0, "brighter"), (4, 4.0, 0.0, "brighter"), (5, 16.0, 0.0, "brighter"),
    (5, 16.0, 2.0, "brighter"), (5, 16.0, 4.0, "brighter"), (5, 16.0, 16.0, "brighter"), (5, 16.0, -4.0, "brighter"),
    (5, 16.0, 1.0, "salient"), (5, 16.0, 2.0, "salient"), (5, 16.0, 4.0, "salient"), (5, 16.0, 8.0, "salient"),
]


def prior_only(a: torch.Tensor, b: torch.Tensor, levels: int, detail: float, base: float, rule: str) -> torch.Tensor:
    return activity_fusion(a, b, torch.tensor([detail] * (levels - 1) + [base]), salient_base=rule == "salient")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="strengths,gains,pipeline")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    tables = args.tables.split(",")
    pairs = {family: validation_pairs(args.data, family, 256) for family in FAMILIES}

    def print_row(name: str, scores: list[float]) -> None:
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in scores) + f" | {sum(scores) / len(scores):.3f} |",
              flush=True)

    print("| activity prior, no network | " + " | ".join(FAMILIES) + " | mean |\n|---|" + "---:|" * 5)
    if "strengths" in tables:
        for levels, detail, base, rule in ROWS:
            print_row(f"{levels} levels, strength {detail:g}, base {base:g} ({rule})",
                      [sum(benchmark_score(prior_only(p.image_a, p.image_b, levels, detail, base, rule), p)
                           for p in pairs[f]) / len(pairs[f]) for f in FAMILIES])
    if "gains" in tables:
        starts = {f: start_prior(UNET_PRESETS["default"], get_task(f).class_id) for f in FAMILIES}
        for gain in GAINS:
            print_row(f"default strengths, detail gain {gain:g}",
                      [sum(benchmark_score(activity_fusion(p.image_a, p.image_b, **{
                          **starts[f], "gains": torch.full_like(starts[f]["gains"], gain)}), p)
                           for p in pairs[f]) / len(pairs[f]) for f in FAMILIES])
    if "pipeline" in tables:
        pipeline = FusionFMPipeline.from_pretrained(Path(__file__).parents[2] / "fusionfm" / "default_model")
        pipeline.set_progress_bar_config(disable=True)
        for config in CONFIGS:
            # A config without detail_gains is a model from before them: gains start at 1.
            pipeline.unet = build_unet("default", **{"detail_gains": None, **json.loads(config.read_text())}).eval()
            print_row(f"{config.name}, untrained U-Net, pipeline",
                      [validation_quality(pipeline, pairs[f], "fp32") for f in FAMILIES])


if __name__ == "__main__":
    main()
