"""The fidelity goals of the default look, per test set, from the folders ``scripts/reproduce/benchmark.sh`` wrote.

    python scripts/reports/fidelity_goals.py BENCHMARK_DIR [--data ../shared/data] [--method FusionFM]

Per data set: (1) MI, VIF, Qabf and SSIM of the method against the median built-in prior's (from per_pair.csv);
(2) the share of pixels near strong edges where the fusion lies more than 10 grey levels outside both sources, against
the built-in Laplacian prior's (fusionfm.evaluation.fidelity); (3) how far the fusion falls below a source's compact
clipped-white regions (lamps, headlights, the sun; for exposure pairs where the darker exposure is clipped too), in
grey levels, over the pairs that have any (goal: within 5); (4) for exposure pairs, the mean HSV saturation of the
fusion against the mean of its two sources'. Reads the fused PNGs, fuses nothing but the Laplacian prior. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch

from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.fidelity import light_source_shortfall, mean_saturation, outside_share_near_edges
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.priors import run_prior

REPO = Path(__file__).resolve().parents[2]
METRICS = ("MI", "VIF", "Qabf", "SSIM")


def dataset_folders(root: Path) -> list[tuple[str, Path]]:
    """(task family, folder holding per_pair.csv and fused/) for every evaluated data set under ``root``."""
    return sorted((path.parent.relative_to(root).parts[0], path.parent) for path in root.rglob("per_pair.csv"))


def read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "per_pair.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def metric_goals(rows: list[dict[str, str]], method: str) -> dict[str, tuple[float, float]]:
    """metric -> (the method's mean, the median built-in prior's mean) over a data set's per-pair rows."""
    means = {}
    for name in {row["method"] for row in rows}:
        own = [row for row in rows if row["method"] == name]
        means[name] = {metric: statistics.fmean(float(row[metric]) for row in own) for metric in METRICS}
    builtin = [values for name, values in means.items() if name.startswith("builtin:")]
    return {metric: (means[method][metric], statistics.median(values[metric] for values in builtin))
            for metric in METRICS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--method", default="FusionFM")
    args = parser.parse_args()
    processor = FusionImageProcessor()
    print("| data set | MI, VIF, Qabf, SSIM vs median prior | outside near edges: ours / Laplacian | light "
          "sources: pairs, mean shortfall (levels), worst | saturation: ours / sources' mean |")
    print("|---|---|---|---|---|")
    for family, folder in dataset_folders(args.benchmarks):
        rows = read_rows(folder)
        goals = metric_goals(rows, args.method)
        below = [metric for metric, (ours, median) in goals.items() if ours < median]
        evaluated = {(row["dataset"], row["stem"]) for row in rows if row["method"] == args.method}
        pairs = [pair for pair in find_pairs(args.data, family, "test") if (pair.dataset, pair.stem) in evaluated]
        dataset = pairs[0].dataset
        outside, laplacian, shortfalls, saturation = [], [], [], []
        for pair in pairs:
            image_a, image_b = load_pair(pair, processor)
            fused = processor.load(folder / "fused" / f"{pair.stem}.png")[None]
            gray_f, gray_a, gray_b = (to_gray_255(image) for image in (fused, image_a, image_b))
            outside.append(float(outside_share_near_edges(gray_f, gray_a, gray_b)))
            prior = to_gray_255(run_prior("laplacian", image_a, image_b, pair.task))
            laplacian.append(float(outside_share_near_edges(prior, gray_a, gray_b)))
            white = torch.minimum(gray_a, gray_b) if family == "MEF" else torch.maximum(gray_a, gray_b)
            shortfall, count = light_source_shortfall(gray_f, white)
            if float(count) > 0:
                shortfalls.append(float(shortfall))
            if family == "MEF":
                sources = (float(mean_saturation(image_a)) + float(mean_saturation(image_b))) / 2
                saturation.append((float(mean_saturation(fused)), sources))
        metric_text = "all at least" if not below else "below: " + ", ".join(
            f"{metric} {goals[metric][0]:.3f} < {goals[metric][1]:.3f}" for metric in below)
        light_text = (f"{len(shortfalls)}, {statistics.fmean(shortfalls):.2f}, {max(shortfalls):.1f}" if shortfalls
                      else "none")
        saturation_text = (f"{statistics.fmean(s for s, _ in saturation):.3f} / "
                           f"{statistics.fmean(m for _, m in saturation):.3f}" if saturation else "")
        name = f"{family} {dataset}"
        print(f"| {name} | {metric_text} | {100 * statistics.fmean(outside):.2f} % / "
              f"{100 * statistics.fmean(laplacian):.2f} % | {light_text} | {saturation_text} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
