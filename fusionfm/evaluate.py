"""Evaluation: how good a model's fusions are, and where it ranks among other methods.

    python -m fusionfm.evaluate --model DIR_OR_HUB_ID --data ../shared/data --task IVF --dataset VIFB \
        --split test --out results/IVF-VIFB
    python -m fusionfm.evaluate --fused some/method/outputs --data ../shared/data --task MFF --out DIR

writes, per data set: ``fused/<stem>.png`` (the model's results), ``per_pair.csv`` (every method's nine
metrics per pair, and the model's seconds per pair), ``ranking.csv`` and ``ranking.md`` (each method's mean
metrics over the pairs every method has, its rank per metric and its mean rank; 1 is best). The methods are
the model (or the folder given with ``--fused``), every method under the data set's ``priors/`` folder and
the built-in priors that suit the task.

``quality_score`` is the single number per task that training reports (the continual-learning matrix
R[i][j], ACC, BWT): the mean of Qabf, SSIM and VIF of the fused image, each divided by the same metric
of the plain average (a + b) / 2 of the pair. 1.0 means "as good as averaging"; the three metrics
measure edge transfer (Qabf), structure (SSIM) and information fidelity (VIF) with respect to both
sources, and the ratio puts tasks of different difficulty on one scale.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .color import luminance
from .datasets import PairRecord, find_pairs, load_pair
from .image_processor import FusionImageProcessor, save_png_atomically
from .metrics import fusion_metrics, qabf, ssim, to_gray_255, vif
from .priors import ExternalPriors, priors_for, run_prior
from .tasks import FusionTask, get_task

RANKED_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

QUALITY_METRICS = {"Qabf": qabf, "SSIM": ssim, "VIF": vif}


def quality_score(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Quality relative to plain averaging for luminances (B, 1, H, W) in [0, 1]: (B,) float64."""
    as_255 = [(image.double() * 255).round().clamp(0, 255) for image in (fused, image_a, image_b)]
    fused, image_a, image_b = as_255
    average = ((image_a + image_b) / 2).round()
    ratios = [metric(fused, image_a, image_b) / metric(average, image_a, image_b).clamp_min(1e-12)
              for metric in QUALITY_METRICS.values()]
    return torch.stack(ratios).mean(0)


@dataclass
class EvaluationPair:
    """A test pair as luminance at the evaluation size: (1, 1, h, w) in [0, 1]."""

    task: FusionTask
    dataset: str
    stem: str
    image_a: torch.Tensor
    image_b: torch.Tensor


def evaluation_pairs(data_root: str | Path, task: str, count: int, resolution: int | None = 256,
                     split: str = "test") -> list[EvaluationPair]:
    """A fixed, small test set of a task: ``count`` pairs taken in turn from each data set (sorted by stem),
    resized so the long side is ``resolution`` (None keeps the size)."""
    pairs = find_pairs(data_root, task, split)
    by_dataset: dict[str, list] = {}
    for pair in pairs:
        by_dataset.setdefault(pair.dataset, []).append(pair)
    chosen, queues = [], [list(group) for group in by_dataset.values()]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    processor = FusionImageProcessor()
    result = []
    for pair in chosen:
        image_a, image_b = load_pair(pair, processor)
        size = processor.processing_size(tuple(image_a.shape[-2:]), resolution)
        result.append(EvaluationPair(get_task(pair.task), pair.dataset, pair.stem,
                                     processor.resize(luminance(image_a), size),
                                     processor.resize(luminance(image_b), size)))
    return result


@torch.no_grad()
def task_quality(pipeline, pairs: list[EvaluationPair], num_inference_steps: int = 1,
                 compute_dtype: torch.dtype | str | None = None) -> float:
    """Mean :func:`quality_score` of a pipeline's fusions of ``pairs``."""
    scores = []
    for pair in pairs:
        fused = pipeline(pair.image_a, pair.image_b, task=pair.task, num_inference_steps=num_inference_steps,
                         processing_resolution=0, compute_dtype=compute_dtype, output_type="pt",
                         show_progress_bar=False).images
        scores.append(float(quality_score(luminance(fused), pair.image_a, pair.image_b)[0]))
    return sum(scores) / len(scores)


# ---------------------------------------------------------------------------------------------- the CLI
def _ranks(values: list[float]) -> list[float]:
    """Rank 1 for the largest value; ties share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and values[order[end + 1]] == values[order[position]]:
            end += 1
        for index in order[position : end + 1]:
            ranks[index] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def rank_methods(scores: dict[str, dict[str, dict[str, float]]]) -> list[dict]:
    """Rows of the ranking table from ``scores[method][stem][metric]``, best mean rank first.

    Only the pairs that every method has count, so all methods are compared on the same pairs.
    """
    methods = list(scores)
    common = sorted(set.intersection(*(set(by_stem) for by_stem in scores.values()))) if methods else []
    if not common:
        raise ValueError("No pair has results from every method; nothing to rank.")
    means = {method: {metric: sum(scores[method][stem][metric] for stem in common) / len(common)
                      for metric in RANKED_METRICS} for method in methods}
    ranks = {metric: dict(zip(methods, _ranks([means[m][metric] for m in methods]), strict=True))
             for metric in RANKED_METRICS}
    rows = []
    for method in methods:
        row = {"method": method, "pairs": len(common)}
        row |= {metric: means[method][metric] for metric in RANKED_METRICS}
        row |= {f"rank_{metric}": ranks[metric][method] for metric in RANKED_METRICS}
        row["mean_rank"] = sum(ranks[metric][method] for metric in RANKED_METRICS) / len(RANKED_METRICS)
        rows.append(row)
    rows.sort(key=lambda row: (row["mean_rank"], row["method"]))
    for position, row in enumerate(rows, start=1):
        row["position"] = position
    return rows


def ranking_markdown(rows: list[dict], highlight: str | None = None) -> str:
    header = "| # | method | " + " | ".join(RANKED_METRICS) + " | mean rank |"
    lines = [header, "|---:|---|" + "---:|" * (len(RANKED_METRICS) + 1)]
    for row in rows:
        name = f"**{row['method']}**" if row["method"] == highlight else row["method"]
        cells = " | ".join(f"{row[m]:.3f}" for m in RANKED_METRICS)
        lines.append(f"| {row['position']} | {name} | {cells} | {row['mean_rank']:.2f} |")
    return "\n".join(lines) + f"\n\n{rows[0]['pairs']} pairs; every metric higher is better; rank 1 is best.\n"


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def _metric_row(fused: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor) -> dict[str, float]:
    values = fusion_metrics(to_gray_255(fused), gray_a, gray_b)
    return {name: float(values[name][0]) for name in RANKED_METRICS}


def evaluate_dataset(pairs: list[PairRecord], out_dir: Path, method_name: str, pipeline=None,
                     fused_dir: Path | None = None, num_inference_steps: int = 1, builtin_priors: bool = True,
                     progress: bool = True) -> list[dict]:
    """Evaluate one data set's pairs; writes the folder described in the module docstring; returns the ranking."""
    task = pairs[0].task
    external = ExternalPriors(pairs[0].dataset_dir)
    builtin = [prior.name for prior in priors_for(task)] if builtin_priors else []
    processor = FusionImageProcessor()
    scores: dict[str, dict[str, dict[str, float]]] = {method_name: {}}
    scores |= {method: {} for method in external.methods if method != method_name}
    scores |= {f"builtin:{name}": {} for name in builtin}
    per_pair = []
    for pair in tqdm(pairs, desc=f"{pair_label(pairs[0])}", unit="pair", disable=not progress):
        image_a, image_b = load_pair(pair, processor)
        gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
        size = tuple(image_a.shape[-2:])
        seconds = None
        if pipeline is not None:
            started = time.perf_counter()
            fused = pipeline(image_a, image_b, task=pair.task, num_inference_steps=num_inference_steps,
                             output_type="pt", show_progress_bar=False).images[0]
            seconds = time.perf_counter() - started
            save_png_atomically(fused, out_dir / "fused" / f"{pair.stem}.png")
            ours = fused[None]
        else:
            matches = sorted(fused_dir.glob(f"{pair.stem}.*"))
            ours = processor.resize(processor.load(matches[0])[None], size) if matches else None
        results = {method_name: ours}
        results |= {method: external.load(method, pair.stem, size) for method in external.paths(pair.stem)
                    if method != method_name}
        results |= {f"builtin:{name}": run_prior(name, image_a, image_b, pair.task) for name in builtin}
        for method, fused in results.items():
            if fused is None:
                continue
            row = _metric_row(fused, gray_a, gray_b)
            scores[method][pair.stem] = row
            per_pair.append({"dataset": pair.dataset, "stem": pair.stem, "method": method, **row,
                             "seconds": f"{seconds:.4f}" if method == method_name and seconds is not None else ""})
    if not scores[method_name]:
        raise ValueError(f"{fused_dir} holds no fused image named after a pair of {pairs[0].dataset} "
                         f"(expected files like {pairs[0].stem}.png).")
    _write_csv(out_dir / "per_pair.csv", per_pair, ["dataset", "stem", "method", *RANKED_METRICS, "seconds"])
    # A method with outputs for only some of the evaluated pairs would shrink the common set the ranking
    # uses (one pair of four on MSRS); it is listed instead of ranked.
    ours = set(scores[method_name])
    partial = {method: len(by_stem) for method, by_stem in scores.items() if by_stem and not ours <= set(by_stem)}
    rows = rank_methods({method: by_stem for method, by_stem in scores.items() if by_stem and method not in partial})
    columns = ["position", "method", "pairs", *RANKED_METRICS, *(f"rank_{m}" for m in RANKED_METRICS), "mean_rank"]
    _write_csv(out_dir / "ranking.csv", rows, columns)
    markdown = f"## {task.family} / {pairs[0].dataset} ({pairs[0].split})\n\n" + ranking_markdown(rows, method_name)
    if partial:
        markdown += "\nNot ranked (outputs for only some of these pairs): " + ", ".join(
            f"{method} ({count} of {len(ours)})" for method, count in sorted(partial.items())) + ".\n"
    temporary = out_dir / ".ranking.md.tmp"
    temporary.write_text(markdown)
    os.replace(temporary, out_dir / "ranking.md")
    return rows


def pair_label(pair: PairRecord) -> str:
    return f"{pair.task.family}/{pair.dataset}"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusionfm.evaluate", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    source.add_argument("--fused", type=Path, default=None, help="evaluate a folder of fused images <stem>.*")
    parser.add_argument("--name", default=None, help="the evaluated method's name in the tables")
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--task", required=True, help="IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF or MFF")
    parser.add_argument("--dataset", action="append", default=None, help="data set(s); default: all of the task")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1, help="flow steps of the model")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each data set")
    parser.add_argument("--no-builtin-priors", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        pairs = find_pairs(args.data, args.task, args.split, args.dataset)
        pipeline = None
        if args.fused is None:
            from .pipeline_fusionfm import FusionFMPipeline

            pipeline = FusionFMPipeline.from_pretrained(args.model)
            pipeline.set_progress_bar_config(disable=True)
            name = args.name or "FusionFM"
        else:
            if not args.fused.is_dir():
                raise FileNotFoundError(f"No folder of fused images at {args.fused}.")
            name = args.name or args.fused.name
        by_dataset: dict[str, list[PairRecord]] = {}
        for pair in pairs:
            by_dataset.setdefault(pair.dataset, []).append(pair)
        for dataset, group in by_dataset.items():
            out_dir = args.out / dataset if len(by_dataset) > 1 else args.out
            out_dir.mkdir(parents=True, exist_ok=True)
            rows = evaluate_dataset(group[: args.limit], out_dir, name, pipeline, args.fused, args.steps,
                                    not args.no_builtin_priors, not args.no_progress)
            ours = next(row for row in rows if row["method"] == name)
            print(f"{dataset}: {name} ranks {ours['position']} of {len(rows)} (mean rank {ours['mean_rank']:.2f} "
                  f"over {ours['pairs']} pairs); tables in {out_dir}")
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
