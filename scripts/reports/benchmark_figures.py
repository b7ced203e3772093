"""One figure per task for the README and the model card: the two inputs, FusionFM's fusion and the fusions of
the two best-ranked other methods of that data set's benchmark table (scripts/reproduce/benchmark.sh).

Usage: python scripts/reports/benchmark_figures.py BENCHMARK_OUT [--out docs/figures]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import PIL.Image
import PIL.ImageDraw

from fusionfm.datasets import find_pairs, load_pair
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.priors import ExternalPriors, run_prior

# (task, data set, pair): one representative test pair per task.
FIGURES = [("IVF", "VIFB", None), ("MIF", "Harvard_MRI_PET", None), ("MEF", "MEFB", None), ("MFF", "MFIFB", None)]
PANEL_HEIGHT = 240
CAPTION = 22


def _to_pil(image) -> PIL.Image.Image:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> RGB PIL image of height PANEL_HEIGHT."""
    image = image[0] if image.ndim == 4 else image
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
    width = round(pil.width * PANEL_HEIGHT / pil.height)
    return pil.resize((width, PANEL_HEIGHT), PIL.Image.LANCZOS)


def _panel_row(panels: list[tuple[str, PIL.Image.Image]]) -> PIL.Image.Image:
    width = sum(image.width for _, image in panels) + 4 * (len(panels) - 1)
    canvas = PIL.Image.new("RGB", (width, PANEL_HEIGHT + CAPTION), "white")
    draw = PIL.ImageDraw.Draw(canvas)
    left = 0
    for caption, image in panels:
        canvas.paste(image, (left, CAPTION))
        draw.text((left + 4, 4), caption, fill="black")
        left += image.width + 4
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--name", default="FusionFM")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    processor = FusionImageProcessor()
    for task, dataset, stem in FIGURES:
        folder = args.benchmarks / task / dataset
        if not folder.is_dir():  # a task with one data set is evaluated straight into its folder
            folder = args.benchmarks / task
        with (folder / "ranking.csv").open(newline="") as handle:
            ranking = list(csv.DictReader(handle))
        ours = next(row for row in ranking if row["method"] == args.name)
        others = [row for row in ranking if row["method"] != args.name][:2]
        pairs = find_pairs(args.data, task, "test", [dataset])
        pair = next(p for p in pairs if p.stem == stem) if stem else pairs[0]
        image_a, image_b = load_pair(pair, processor)
        size = tuple(image_a.shape[-2:])
        panels = [(pair.task.modality_a, _to_pil(image_a)), (pair.task.modality_b, _to_pil(image_b)),
                  (f"{args.name} (#{ours['position']})",
                   _to_pil(processor.load(folder / "fused" / f"{pair.stem}.png")))]
        external = ExternalPriors(pair.dataset_dir)
        for row in others:
            method = row["method"]
            if method.startswith("builtin:"):
                fused = run_prior(method.removeprefix("builtin:"), image_a, image_b, pair.task)
            else:
                fused = external.load(method, pair.stem, size)
            panels.append((f"{method} (#{row['position']})", _to_pil(fused)))
        target = args.out / f"{task}.png"
        _panel_row(panels).save(target)
        print(f"{target}: {dataset}/{pair.stem}")


if __name__ == "__main__":
    main()
