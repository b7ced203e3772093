"""How much can stage 1 selection gain over the best single prior on synthetic pairs? (docs/pseudolabels.md)

    python scripts/experiments/selection_ceiling.py MFF --limit 30     # the built-in priors plus 27 focus-map variants
    python scripts/experiments/selection_ceiling.py MEF --limit 40 --search-rows   # built-in priors; 231 weight rows
    python scripts/experiments/selection_ceiling.py MFF --limit 30 --no-variants --depth-blur   # another blur model

For every candidate: mean PSNR (RGB) and SSIM (8-bit luma) against the truth, as in
``scripts/reports/pseudolabel_report.py`` (candidates rounded to 8 bits, like written labels); the per-pair oracle
(the candidate closest to the truth, by PSNR); the task's selection. With ``--search-rows``, every weight row
of one to three metrics with equal weights, best first. ``--depth-blur`` replaces the MFF pairs of
``fusionfm.synthetic`` by pairs whose defocus follows a random depth map (a smooth field through a sigmoid of
random steepness 2-30, so some pairs have wide half-defocused regions, others near-binary ones; each image
focused at one end of the depth range, blur radius up to 2-6 px). Synthetic *train* pairs by default, so
that nothing here is tuned on the test pairs.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
from pathlib import Path

import torch
from kornia.filters import filter2d

from fusionfm.color import recombine
from fusionfm.evaluation.reference import psnr_to_truth, ssim_to_truth
from fusionfm.labels.selection import SELECTION_WEIGHTS, candidate_metrics, weighted_scores
from fusionfm.priors import focus_map_fusion, priors_for, run_prior
from fusionfm.synthetic import SyntheticPairs, _smooth_field, _uniform, disk_kernel, pair_generator, quantise
from fusionfm.tasks import get_task

SEARCHED_METRICS = ("Qabf", "VIF", "MI", "SSIM", "SCD", "CC", "EN", "SD", "SF", "AG", "PSNR")


def focus_map_variants() -> dict[str, functools.partial]:
    return {f"focus_map w{window} m{majority} r{radius}": functools.partial(
                focus_map_fusion, focus_window=window, majority_window=majority, guided_radius=radius)
            for window in (5, 9, 15) for majority in (7, 15, 31) for radius in (1, 2, 3)}


def depth_blurred(photo: torch.Tensor, radius: torch.Tensor, max_radius: float) -> torch.Tensor:
    """(3, H, W) photo defocused by a per-pixel disk radius (H, W) in [0, max_radius], interpolating a stack
    of disk blurs half a pixel apart."""
    levels = torch.linspace(0, max_radius, int(max_radius * 2) + 2)
    stack = torch.cat([photo[None] if level < 0.25 else filter2d(photo[None], disk_kernel(float(level)),
                                                                  border_type="reflect") for level in levels])
    position = (radius / max_radius * (len(levels) - 1)).clamp(0, len(levels) - 1 - 1e-6)
    lower = position.floor().long().expand(1, 3, -1, -1)
    fraction = position - position.floor()
    return (stack.gather(0, lower)[0] * (1 - fraction) + stack.gather(0, lower + 1)[0] * fraction).clamp(0, 1)


def depth_pair(photo: torch.Tensor, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = pair_generator(1, stem)
    height, width = photo.shape[-2:]
    field = _smooth_field(height, width, generator, cells=int(_uniform(generator, 2, 5)))[0, 0]
    depth = torch.sigmoid(_uniform(generator, 2.0, 30.0) * (field - field.median()))
    images = []
    for focus in (1.0, 0.0):
        max_radius = _uniform(generator, 2.0, 6.0)
        images.append(quantise(depth_blurred(photo, max_radius * (depth - focus).abs(), max_radius)))
    return images[0], images[1]


def collect(task: str, split: str, limit: int, data: Path, variants: bool, depth_blur: bool) -> list[dict]:
    """Per pair: every candidate's twelve metrics and its (PSNR, SSIM) against the truth."""
    pairs = SyntheticPairs(data, task, split, limit=limit)
    policy = get_task(task).color_policy
    records = []
    for index in range(len(pairs)):
        if depth_blur:
            truth = pairs.photo(index)
            a, b = (image[None] for image in depth_pair(truth, pairs.rows[index]["stem"]))
            truth = truth[None]
        else:
            pair = pairs[index]
            a, b, truth = pair.image_a[None], pair.image_b[None], pair.ground_truth[None]
        candidates = {prior.name: run_prior(prior.name, a, b, task) for prior in priors_for(task)}
        if variants:
            candidates |= {name: recombine(fuse(a, b), a, b, policy) for name, fuse in focus_map_variants().items()}
        candidates = {name: quantise(image) for name, image in candidates.items()}
        closeness = {name: (psnr_to_truth(image, truth), ssim_to_truth(image, truth))
                     for name, image in candidates.items()}
        records.append({"metrics": candidate_metrics(candidates, a, b), "closeness": closeness})
    return records


def selection_result(records: list[dict], weights: dict[str, float]) -> tuple[float, float, dict[str, int]]:
    """Mean (PSNR, SSIM) of the candidates a weight row selects, and how often each was picked."""
    chosen = []
    for record in records:
        scores = weighted_scores(record["metrics"], weights)
        chosen.append(max(scores, key=scores.get))
    picks = {name: chosen.count(name) for name in sorted(set(chosen), key=chosen.count, reverse=True)}
    closeness = [record["closeness"][name] for record, name in zip(records, chosen, strict=True)]
    return statistics.mean(v[0] for v in closeness), statistics.mean(v[1] for v in closeness), picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["MEF", "MFF"])
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--no-variants", action="store_true", help="MFF: leave out the focus-map variants")
    parser.add_argument("--search-rows", action="store_true", help="try every row of 1-3 metrics, equal weights")
    parser.add_argument("--depth-blur", action="store_true", help="MFF: defocus that follows a random depth map")
    args = parser.parse_args()
    if args.depth_blur and args.task != "MFF":
        parser.error("--depth-blur is for MFF pairs.")
    records = collect(args.task, args.split, args.limit, args.data, args.task == "MFF" and not args.no_variants,
                      args.depth_blur)
    names = list(records[0]["closeness"])
    closest = [max(names, key=lambda name, r=record: r["closeness"][name][0]) for record in records]

    blur_model = " (depth-map defocus)" if args.depth_blur else ""
    print(f"{args.task}, {len(records)} synthetic {args.split} pairs{blur_model}\n")
    print("| candidate | PSNR (dB) | SSIM | closest on |\n|---|---:|---:|---:|")
    for name in names:
        psnr = statistics.mean(record["closeness"][name][0] for record in records)
        ssim = statistics.mean(record["closeness"][name][1] for record in records)
        print(f"| {name} | {psnr:.3f} | {ssim:.4f} | {closest.count(name)} |")
    oracle = [record["closeness"][name] for record, name in zip(records, closest, strict=True)]
    print(f"| oracle: closest per pair | {statistics.mean(v[0] for v in oracle):.3f} | "
          f"{statistics.mean(v[1] for v in oracle):.4f} | |")
    psnr, ssim, picks = selection_result(records, SELECTION_WEIGHTS[args.task])
    print(f"| selection, {args.task} weights | {psnr:.3f} | {ssim:.4f} | picks: {picks} |")

    if args.search_rows:
        rows = []
        for size in (1, 2, 3):
            for metrics in itertools.combinations(SEARCHED_METRICS, size):
                rows.append((*selection_result(records, dict.fromkeys(metrics, 1 / size)), metrics))
        rows.sort(key=lambda row: -row[0])
        print(f"\n{len(rows)} weight rows, best five by PSNR:\n")
        for psnr, ssim, picks, metrics in rows[:5]:
            print(f"- {', '.join(metrics)}: {psnr:.3f} dB, {ssim:.4f}, picks {picks}")


if __name__ == "__main__":
    main()
