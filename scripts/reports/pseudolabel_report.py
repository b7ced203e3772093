"""Evidence for the pseudo-label builder, from output folders of ``python -m fusionfm.pseudolabel``.

    python scripts/reports/pseudolabel_report.py --synthetic OUT_MEF OUT_MFF --real OUT_IVF OUT_MIF \
        --figure docs/pseudolabels.png > report.md

(a) synthetic folders (with ``truth/``): PSNR (RGB) and SSIM (8-bit luma, data range 255) against the
    truth for every single built-in prior, the selected label and the refined label;
(b) real folders: selection score before and after refinement, share of pairs refined;
(c) a figure: sources, every built-in candidate, the selection and the refined label for one pair
    per folder.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch

from fusionfm import FusionImageProcessor, get_task
from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.reference import psnr_to_truth, ssim_to_truth
from fusionfm.image_processor import to_pil
from fusionfm.labels.builder import REGIONS_CANDIDATE
from fusionfm.labels.regions import region_select
from fusionfm.priors import ExternalPriors, priors_for, run_prior
from fusionfm.synthetic import quantise

PROCESSOR = FusionImageProcessor()


def _load(path: Path) -> torch.Tensor:
    return PROCESSOR.load(path)[None]


def _rows(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _selected(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(row["dataset"], row["stem"]): row for row in rows if row["selected"] == "1"}


def synthetic_table(folder: Path) -> tuple[str, dict]:
    selected = _selected(_rows(folder))
    task = get_task(next(iter(selected.values()))["task"])
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    picks, refined_count = Counter(), 0
    example = None
    for (dataset, stem), row in sorted(selected.items()):
        base = folder / dataset
        a = _load(base / "sources" / task.modality_a / f"{stem}.png")
        b = _load(base / "sources" / task.modality_b / f"{stem}.png")
        truth = _load(base / "truth" / f"{stem}.png")
        # As 8-bit images, like the written labels: selection and refinement are compared on equal terms.
        fused = {prior.name: run_prior(prior.name, a, b, task) for prior in priors_for(task)}
        candidates = {name: quantise(image) for name, image in fused.items()}
        for name, image in candidates.items():
            scores[name].append((psnr_to_truth(image, truth), ssim_to_truth(image, truth)))
        oracle = max(candidates, key=lambda name: psnr_to_truth(candidates[name], truth))
        scores["oracle: best prior per pair (by PSNR)"].append((psnr_to_truth(candidates[oracle], truth),
                                                                ssim_to_truth(candidates[oracle], truth)))
        merged = quantise(region_select(fused, a, b, task).label)
        scores["regions: merge of the priors"].append((psnr_to_truth(merged, truth), ssim_to_truth(merged, truth)))
        chosen = {**candidates, REGIONS_CANDIDATE: merged}[row["candidate"]]
        label = _load(base / f"{stem}.png")
        scores["stage 1: selected"].append((psnr_to_truth(chosen, truth), ssim_to_truth(chosen, truth)))
        scores["stage 1 + 2: refined"].append((psnr_to_truth(label, truth), ssim_to_truth(label, truth)))
        picks[row["candidate"]] += 1
        refined_count += row["refined"] == "1"
        if example is None or (not example[-1] and row["refined"] == "1"):  # prefer a pair the refiner changed
            example = (a, b, candidates, row["candidate"], label, truth, stem, row["refined"] == "1")
    lines = [f"**{task.name}, {len(selected)} synthetic test pairs** ({folder.name}); selection picked "
             + ", ".join(f"{name} {count}x" for name, count in picks.most_common())
             + f"; the refiner's output was kept for {refined_count} pairs.", "",
             "| label | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    for name, values in scores.items():
        psnr = sum(v[0] for v in values) / len(values)
        ssim_mean = sum(v[1] for v in values) / len(values)
        lines.append(f"| {name} | {psnr:.2f} | {ssim_mean:.4f} |")
    return "\n".join(lines), example


def real_table(folder: Path) -> tuple[str, dict]:
    rows = _rows(folder)
    selected = _selected(rows)
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for row in selected.values():
        by_dataset[row["dataset"]].append(row)
    lines = [f"**{folder.name}**", "",
             "| dataset | pairs | selected (most often) | refined kept | improved (after > before) "
             "| mean score before | mean score after |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for dataset, chosen in sorted(by_dataset.items()):
        picks = Counter(row["candidate"] for row in chosen).most_common(3)
        refined = sum(row["refined"] == "1" for row in chosen)
        improved = sum(row["refined"] == "1" and float(row["score_after"]) > float(row["score_before"])
                       for row in chosen)
        before = sum(float(row["score_before"]) for row in chosen) / len(chosen)
        after = sum(float(row["score_after"]) if row["refined"] == "1" else float(row["score_before"])
                    for row in chosen) / len(chosen)
        lines.append(f"| {dataset} | {len(chosen)} | {', '.join(f'{n} {c}' for n, c in picks)} | "
                     f"{refined} ({100 * refined / len(chosen):.0f} %) | "
                     f"{improved} ({100 * improved / len(chosen):.0f} %) | {before:.4f} | {after:.4f} |")
    ordered = sorted(selected.items())
    (dataset, stem), row = next((item for item in ordered if item[1]["refined"] == "1"), ordered[0])
    return "\n".join(lines), (dataset, stem, get_task(row["task"]), row)


def _tile(image: torch.Tensor, title: str, height: int = 150) -> PIL.Image.Image:
    picture = to_pil(image[0]).convert("RGB")
    picture = picture.resize((max(1, round(picture.width * height / picture.height)), height))
    canvas = PIL.Image.new("RGB", (picture.width, height + 16), "white")
    canvas.paste(picture, (0, 16))
    PIL.ImageDraw.Draw(canvas).text((2, 2), title, fill="black")
    return canvas


def figure(rows_of_tiles: list[list[PIL.Image.Image]], path: Path) -> None:
    width = max(sum(tile.width for tile in row) for row in rows_of_tiles)
    height = sum(row[0].height for row in rows_of_tiles)
    sheet = PIL.Image.new("RGB", (width, height), "white")
    top = 0
    for row in rows_of_tiles:
        left = 0
        for tile in row:
            sheet.paste(tile, (left, top))
            left += tile.width
        top += row[0].height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", nargs="*", type=Path, default=[])
    parser.add_argument("--real", nargs="*", type=Path, default=[])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    tiles = []
    for folder in args.synthetic:
        table, (a, b, candidates, chosen, label, truth, stem, refined) = synthetic_table(folder)
        print(table, "\n")
        tiles.append([_tile(a, f"{stem} a"), _tile(b, "b")]
                     + [_tile(image, name + (" *" if name == chosen else "")) for name, image in candidates.items()]
                     + [_tile(label, "refined" if refined else "label (refiner rejected)"), _tile(truth, "truth")])
    for folder in args.real:
        table, (dataset, stem, task, row) = real_table(folder)
        print(table, "\n")
        pair = next(p for p in find_pairs(args.data, task, row["split"], [dataset]) if p.stem == stem)
        a, b = load_pair(pair)
        candidates = {prior.name: run_prior(prior.name, a, b, task) for prior in priors_for(task)}
        external = ExternalPriors(pair.dataset_dir)
        candidates.update({m: external.load(m, stem, tuple(a.shape[-2:])) for m in external.paths(stem)})
        label = _load(folder / dataset / f"{stem}.png")
        tiles.append([_tile(a, f"{dataset}/{stem} a"), _tile(b, "b")]
                     + [_tile(image, name + (" *" if name == row["candidate"] else ""))
                        for name, image in candidates.items()]
                     + [_tile(label, "refined" if row["refined"] == "1" else "label (refiner rejected)")])
    if args.figure and tiles:
        figure(tiles, args.figure)
        print(f"figure: {args.figure} (* marks the selected candidate)")


if __name__ == "__main__":
    main()
