"""Where a method ranks among others on a data set: per-pair metrics, mean metrics, ranks and the tables.

:func:`evaluate_dataset` writes, per data set: ``fused/<stem>.png`` (the model's results), ``per_pair.csv``
(every method's nine metrics per pair, and the model's seconds per pair), ``ranking.csv`` and ``ranking.md``
(each method's mean metrics over the pairs every method has, its rank per metric and its mean rank; 1 is
best). The methods are the model (or a folder of fused images), every method under the data set's
``priors/`` folder and the built-in priors that suit the task. ``python -m fusionfm.evaluate`` is its CLI.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import save_png_atomic, write_csv_atomic, write_text_atomic
from ..datasets import PairRecord, load_pair
from ..image_processor import FusionImageProcessor
from ..labels.priors import ExternalPriors, priors_for, run_prior
from .metrics import fusion_metrics, to_gray_255

RANKED_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")


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


def ranked_metrics(fused: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor) -> dict[str, float]:
    """The nine :data:`RANKED_METRICS` of a fused image (1, C, H, W) in [0, 1] against 8-bit gray sources."""
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
            save_png_atomic(fused, out_dir / "fused" / f"{pair.stem}.png")
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
            row = ranked_metrics(fused, gray_a, gray_b)
            scores[method][pair.stem] = row
            per_pair.append({"dataset": pair.dataset, "stem": pair.stem, "method": method, **row,
                             "seconds": f"{seconds:.4f}" if method == method_name and seconds is not None else ""})
    if not scores[method_name]:
        raise ValueError(f"{fused_dir} holds no fused image named after a pair of {pairs[0].dataset} "
                         f"(expected files like {pairs[0].stem}.png).")
    write_csv_atomic(out_dir / "per_pair.csv", per_pair, ["dataset", "stem", "method", *RANKED_METRICS, "seconds"])
    # A method with outputs for only some of the evaluated pairs would shrink the common set the ranking
    # uses (one pair of four on MSRS); it is listed instead of ranked.
    ours = set(scores[method_name])
    partial = {method: len(by_stem) for method, by_stem in scores.items() if by_stem and not ours <= set(by_stem)}
    rows = rank_methods({method: by_stem for method, by_stem in scores.items() if by_stem and method not in partial})
    columns = ["position", "method", "pairs", *RANKED_METRICS, *(f"rank_{m}" for m in RANKED_METRICS), "mean_rank"]
    write_csv_atomic(out_dir / "ranking.csv", rows, columns)
    markdown = f"## {task.family} / {pairs[0].dataset} ({pairs[0].split})\n\n" + ranking_markdown(rows, method_name)
    if partial:
        markdown += "\nNot ranked (outputs for only some of these pairs): " + ", ".join(
            f"{method} ({count} of {len(ours)})" for method, count in sorted(partial.items())) + ".\n"
    write_text_atomic(out_dir / "ranking.md", markdown)
    return rows


def pair_label(pair: PairRecord) -> str:
    return f"{pair.task.family}/{pair.dataset}"
