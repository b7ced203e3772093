"""The learning ledger: a trained model against its own untrained start and against the reference model.

    python scripts/reports/learning_ledger.py MODEL --out work/ledger [--split validation test] [--tasks IVF MIF]

For every data set of the validation split and of the test splits: the mean MI, VIF, Qabf and SSIM (and MEF-SSIM of
exposure pairs against their two frames) of three fusions of each pair: MODEL's start (MODEL with every task returned
to it by ``reset_task``), the reference model (``fusionfm/reference_model``, the bundled model before learning paid)
and MODEL itself; for the synthetic pairs (validation, and made from the natural test photographs) also the PSNR to
their photograph. A column passes when MODEL is 0.5 % or more above on at least 3 of MI, VIF, Qabf and SSIM and no
more than 0.5 % below on any (nor on MEF-SSIM or PSNR). Pairs at their own size; one network step;
the pipelines' default precision. Per-pair results are cached under OUT/pairs/, so a stopped run resumes. Writes
OUT/ledger.md and prints it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline, get_task
from fusionfm.atomic import write_text_atomic
from fusionfm.color import luminance
from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.reference import psnr_to_truth
from fusionfm.evaluation.validation import validation_images
from fusionfm.metrics.fusion import mutual_information, qabf, ssim, to_gray_255, vif
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.synthetic import SyntheticPairs

REPO = Path(__file__).resolve().parents[2]
METRICS = ("MI", "VIF", "Qabf", "SSIM")
MARGIN = 0.5  # per cent
COLUMNS = ("start", "reference", "trained")


def started(model: str) -> FusionFMPipeline:
    """The pipeline ``model`` with every task returned to its start."""
    start = FusionFMPipeline.from_pretrained(model)
    for class_id in range(start.unet.config.num_tasks):
        start.unet.reset_task(class_id)
    return start


def validation_sets(data_root: Path, families: list[str]) -> dict[str, list]:
    """(set name) -> [(stem, task, image a, image b, truth or None)] of the validation split."""
    sets: dict[str, list] = {}
    for family in families:
        for row, task, a, b, truth in validation_images(data_root, family):
            sets.setdefault(f"validation {family} {row['dataset']}", []).append((row["stem"], task, a, b, truth))
    return sets


def test_sets(data_root: Path, families: list[str]) -> dict[str, list]:
    """(set name) -> [(stem, task, loader)] of every test split and of the synthetic pairs of the natural test
    photographs (MEF, MFF); a loader returns (image a, image b, truth or None)."""
    sets: dict[str, list] = {}
    for family in families:
        for pair in find_pairs(data_root, family, "test"):
            loader = functools.partial(_real_pair, pair)
            sets.setdefault(f"test {family} {pair.dataset}", []).append((pair.stem, pair.task, loader))
        if family in ("MEF", "MFF"):
            made = SyntheticPairs(data_root, family, "test", seed=0)
            for index, row in enumerate(made.rows):
                loader = functools.partial(_synthetic_pair, made, index)
                sets.setdefault(f"test {family} synthetic", []).append((row["stem"], get_task(family), loader))
    return sets


def _real_pair(record) -> tuple:
    image_a, image_b = (image[0] for image in load_pair(record))
    return image_a, image_b, None


def _synthetic_pair(pairs: SyntheticPairs, index: int) -> tuple:
    pair = pairs[index]
    return pair.image_a, pair.image_b, pair.ground_truth


def scores(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, exposure: bool,
           truth: torch.Tensor | None) -> dict[str, float]:
    gray = [to_gray_255(image[None]) for image in (fused, a, b)]
    values = {"MI": mutual_information(*gray), "VIF": vif(*gray), "Qabf": qabf(*gray), "SSIM": ssim(*gray)}
    values = {name: float(value) for name, value in values.items()}
    if exposure:
        frames = torch.stack([luminance(image[None])[0] for image in (a, b)])
        values["MEF-SSIM"] = mef_ssim(luminance(fused[None])[0], frames)
    if truth is not None:
        values["PSNR"] = psnr_to_truth(fused[None], truth[None])
    return values


def verdict(changes: dict[str, float]) -> str:
    gains = sum(changes[name] >= MARGIN for name in METRICS)
    worst = min(changes.values())
    return "pass" if gains >= 3 and worst >= -MARGIN else "short"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the trained pipeline (folder or Hub id)")
    parser.add_argument("--reference", default=str(REPO / "fusionfm" / "reference_model"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--split", nargs="+", default=["validation", "test"], choices=["validation", "test"])
    parser.add_argument("--tasks", nargs="+", default=["IVF", "MIF", "MEF", "MFF"])
    parser.add_argument("--datasets", nargs="+", default=None, help="only these data sets (e.g. TNO)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = FusionFMPipeline.from_pretrained(args.model)
    pipelines = {"start": started(args.model), "reference": FusionFMPipeline.from_pretrained(args.reference),
                 "trained": trained}
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=True)
    sets = {}
    if "validation" in args.split:
        sets |= validation_sets(args.data, args.tasks)
    if "test" in args.split:
        sets |= test_sets(args.data, args.tasks)
    if args.datasets:
        sets = {name: items for name, items in sets.items() if name.split()[-1] in args.datasets}
    lines = ["| set | pairs | metric | start | reference | trained | vs start | vs reference |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for name, items in sets.items():
        rows = []
        for item in items:
            stem, task = item[0], item[1]
            cache = args.out / "pairs" / name.replace(" ", "_") / f"{stem}.json"
            if cache.is_file():
                rows.append(json.loads(cache.read_text()))
                continue
            a, b, truth = item[2:] if len(item) == 5 else item[2]()
            row = {}
            for column, pipeline in pipelines.items():
                fused = pipeline(a, b, task=task, output_type="pt").images[0]
                row[column] = scores(fused, a, b, task.family == "MEF", truth)
            write_text_atomic(cache, json.dumps(row))
            rows.append(row)
        means = {column: {metric: sum(r[column][metric] for r in rows) / len(rows) for metric in rows[0][column]}
                 for column in COLUMNS}
        changes = {against: {metric: 100 * (means["trained"][metric] / means[against][metric] - 1)
                             for metric in means["trained"]} for against in ("start", "reference")}
        for metric in means["trained"]:
            values = " | ".join(f"{means[column][metric]:.4f}" for column in COLUMNS)
            lines.append(f"| {name} | {len(rows)} | {metric} | {values} | {changes['start'][metric]:+.2f} % | "
                         f"{changes['reference'][metric]:+.2f} % |")
        verdicts.append(f"| {name} | {verdict(changes['start'])} | {verdict(changes['reference'])} |")
        print(lines[-1], flush=True)
    summary = ["| set | vs start | vs reference |", "|---|---|---|", *verdicts]
    text = "\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"
    write_text_atomic(args.out / "ledger.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
