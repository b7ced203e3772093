"""Exposure pairs fused the default way and with ``natural_exposure=True``, on the MEF validation pairs: MEF-SSIM
(the Waterloo measure of exposure fusion, with its brightness term), the nine-metric validation score and the mean
brightness, beside the GFF and Mertens-style built-in priors.

    python scripts/reports/exposure_pair_looks.py [MODEL] [--data ../shared/data] [--dataset Merianos] [--out DIR]

One row per method: the mean over the pairs of the data set (``--dataset``: the Merianos three-exposure sets'
darkest and brightest frames, or the synthetic pairs); with ``--out``, one PNG per pair (the two sources, then each
method, side by side) to judge halos and highlights by eye.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.evaluation.mef_ssim import mef_ssim
from fusionfm.evaluation.validation import benchmark_score, validation_pairs
from fusionfm.image_processor import to_pil
from fusionfm.labels.priors import run_prior

MODES = {"FusionFM (default)": {}, "FusionFM, natural_exposure": {"natural_exposure": True},
         "FusionFM, natural_exposure, detail_gain=1": {"natural_exposure": True, "detail_gain": 1.0}}
PRIORS = ("gff", "exposure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="fusionfm/default_model")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--dataset", default="Merianos", help="a part of the validation data set's name")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    pairs = [pair for pair in validation_pairs(args.data, "MEF", resolution=None) if args.dataset in pair.dataset]
    if not pairs:
        raise SystemExit(f"No MEF validation pair's data set contains {args.dataset!r}.")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for pair in pairs:
        fusions = {name: luminance(pipeline(pair.image_a[0], pair.image_b[0], task="MEF", processing_resolution=0,
                                            output_type="pt", **kwargs).images)
                   for name, kwargs in MODES.items()}
        fusions.update({f"prior: {name}": luminance(run_prior(name, pair.image_a, pair.image_b, "MEF"))
                        for name in PRIORS})
        frames = torch.cat([luminance(pair.image_a), luminance(pair.image_b)])
        for name, fused in fusions.items():
            rows.setdefault(name, []).append((mef_ssim(fused, frames), benchmark_score(fused, pair),
                                              float(fused.mean()) * 255))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            to_pil(torch.cat([luminance(pair.image_a), luminance(pair.image_b), *fusions.values()], dim=-1)[0]).save(
                args.out / f"{pair.dataset}_{pair.stem}.png")
    print(f"| MEF validation, {args.dataset}, {len(pairs)} pairs | MEF-SSIM | validation score | mean grey level |\n"
          "|---|---:|---:|---:|")
    for name, values in rows.items():
        means = [sum(column) / len(column) for column in zip(*values, strict=True)]
        print(f"| {name} | {means[0]:.4f} | {means[1]:.3f} | {means[2]:.1f} |")


if __name__ == "__main__":
    main()
