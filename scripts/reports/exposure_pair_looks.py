"""Exposure pairs fused the default way and with ``natural_exposure=True``, on the MEF validation pairs: MEF-SSIM
(the Waterloo measure of exposure fusion, with its brightness term), the nine-metric validation score and the mean
brightness, beside the GFF and Mertens-style built-in priors.

    python scripts/reports/exposure_pair_looks.py [MODEL] [--data ../shared/data] [--dataset Merianos] [--out DIR]
    python scripts/reports/exposure_pair_looks.py --split test --dataset MEFB

One row per method: the mean over the pairs of the data set (``--dataset``: the Merianos three-exposure sets'
darkest and brightest frames, or the synthetic pairs); with ``--out``, one PNG per pair (the two sources, then each
method, side by side) to judge halos and highlights by eye. ``--split test`` reports on a test data set instead
(MEFB or SICE_HoLoCo, in colour, without the validation score): for the record only, nothing is chosen with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.validation import benchmark_score, validation_pairs
from fusionfm.image_processor import to_pil
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.priors import run_prior

MODES = {"FusionFM (default)": {}, "FusionFM, natural_exposure": {"natural_exposure": True},
         "FusionFM, natural_exposure, detail_gain=1": {"natural_exposure": True, "detail_gain": 1.0}}
PRIORS = ("gff", "exposure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="fusionfm/default_model")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--dataset", default="Merianos", help="a part of the validation data set's name")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    args = parser.parse_args()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    # (name, image_a, image_b, the validation pair behind the score or None), images (1, C, H, W)
    if args.split == "validation":
        pairs = [(f"{pair.dataset}_{pair.stem}", pair.image_a, pair.image_b, pair)
                 for pair in validation_pairs(args.data, "MEF", resolution=None) if args.dataset in pair.dataset]
    else:
        pairs = [(f"{record.dataset}_{record.stem}", *load_pair(record), None)
                 for record in find_pairs(args.data, "MEF", "test", [args.dataset])]
    if not pairs:
        raise SystemExit(f"No MEF {args.split} pair's data set contains {args.dataset!r}.")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for name, image_a, image_b, scored in pairs:
        fusions = {method: pipeline(image_a[0], image_b[0], task="MEF", processing_resolution=0, output_type="pt",
                                    **kwargs).images for method, kwargs in MODES.items()}
        fusions.update({f"prior: {prior}": run_prior(prior, image_a, image_b, "MEF") for prior in PRIORS})
        frames = torch.cat([luminance(image_a), luminance(image_b)])
        for method, fused in fusions.items():
            gray = luminance(fused)
            rows.setdefault(method, []).append((mef_ssim(gray, frames),
                                                benchmark_score(gray, scored) if scored else float("nan"),
                                                float(gray.mean()) * 255))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            to_pil(torch.cat([image_a, image_b, *fusions.values()], dim=-1)[0]).save(args.out / f"{name}.png")
    print(f"| MEF {args.split}, {args.dataset}, {len(pairs)} pairs | MEF-SSIM | validation score | mean grey level |\n"
          "|---|---:|---:|---:|")
    for method, values in rows.items():
        means = [sum(column) / len(column) for column in zip(*values, strict=True)]
        score = "-" if args.split == "test" else f"{means[1]:.3f}"
        print(f"| {method} | {means[0]:.4f} | {score} | {means[2]:.1f} |")


if __name__ == "__main__":
    main()
