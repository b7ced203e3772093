"""Where a method ranks among others on a data set: per-pair metrics, mean metrics, ranks and the tables.

:func:`evaluate_dataset` writes, per data set: ``fused/<stem>.png`` (the model's results), ``per_pair.csv``
(every method's nine metrics per pair, and the model's seconds per pair), ``ranking.csv`` and ``ranking.md``
(each method's mean metrics over the pairs every method has, its rank per metric and its mean rank; 1 is
best). The methods are the model (or a folder of fused images), every method under the data set's
``priors/`` folder and the built-in priors that suit the task. ``python -m fusionfm.evaluate`` is its CLI
(also under ``accelerate launch``, the pairs split between processes; a killed run resumes).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import save_png_atomic, write_csv_atomic, write_text_atomic
from ..datasets import PairRecord, load_pair
from ..distributed import process_state
from ..image_processor import FusionImageProcessor, to_pil
from ..metrics.fusion import fusion_metrics, to_gray_255
from ..priors import ExternalPriors, priors_for, run_prior

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


def _pair_results(pair: PairRecord, out_dir: Path, method_name: str, pipeline, fused_dir: Path | None,
                  num_inference_steps: int, builtin: list[str], external: ExternalPriors,
                  processor: FusionImageProcessor, call_options: dict) -> list[dict]:
    """Every method's nine metrics on one pair (rows of ``per_pair.csv``); writes the model's fused image."""
    image_a, image_b = load_pair(pair, processor)
    gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
    size = tuple(image_a.shape[-2:])
    seconds = None
    if pipeline is not None:
        started = time.perf_counter()
        fused = pipeline(image_a, image_b, task=pair.task, num_inference_steps=num_inference_steps,
                         output_type="pt", show_progress_bar=False, **call_options).images[0]
        seconds = time.perf_counter() - started
        save_png_atomic(to_pil(fused), out_dir / "fused" / f"{pair.stem}.png")
        ours = fused[None]
    else:
        matches = sorted(fused_dir.glob(f"{pair.stem}.*"))
        ours = processor.resize(processor.load(matches[0])[None], size) if matches else None
    results = {method_name: ours}
    results |= {method: external.load(method, pair.stem, size) for method in external.paths(pair.stem)
                if method != method_name}
    results |= {f"builtin:{name}": run_prior(name, image_a, image_b, pair.task) for name in builtin}
    return [{"dataset": pair.dataset, "stem": pair.stem, "method": method, **ranked_metrics(fused, gray_a, gray_b),
             "seconds": f"{seconds:.4f}" if method == method_name and seconds is not None else ""}
            for method, fused in results.items() if fused is not None]


def evaluate_dataset(pairs: list[PairRecord], out_dir: Path, method_name: str, pipeline=None,
                     fused_dir: Path | None = None, num_inference_steps: int = 1, builtin_priors: bool = True,
                     progress: bool = True, call_options: dict | None = None) -> list[dict] | None:
    """Evaluate one data set's pairs; writes the folder described in the module docstring; returns the ranking
    (on the main process; None on the others). ``call_options``: more keyword arguments of the pipeline call
    (``detail_gain``, ``natural_exposure``).

    Under ``accelerate launch`` the pairs are split between the processes. Each pair's rows are kept in
    ``out_dir/.pairs/<stem>.json`` until the tables are written, so a killed run resumes where it stopped.
    """
    task = pairs[0].task
    external = ExternalPriors(pairs[0].dataset_dir)
    builtin = [prior.name for prior in priors_for(task)] if builtin_priors else []
    processor = FusionImageProcessor()
    state = process_state()
    cache = out_dir / ".pairs"
    # What the cached rows were computed for; rows of another evaluation in the same folder are not reused.
    call_options = call_options or {}
    signature = {"method": method_name, "model": str(getattr(pipeline, "name_or_path", None)),
                 "fused_dir": str(fused_dir), "steps": num_inference_steps, "builtin": builtin,
                 "options": call_options}

    def cached(pair: PairRecord) -> list[dict] | None:
        try:
            record = json.loads((cache / f"{pair.stem}.json").read_text())
        except (OSError, ValueError):
            return None
        return record["rows"] if record.get("signature") == signature else None

    todo = [pair for pair in pairs if cached(pair) is None]
    with state.split_between_processes(todo) as mine:
        for pair in tqdm(mine, desc=f"{pair_label(pairs[0])}", unit="pair",
                         disable=not progress or not state.is_main_process):
            rows = _pair_results(pair, out_dir, method_name, pipeline, fused_dir, num_inference_steps, builtin,
                                 external, processor, call_options)
            write_text_atomic(cache / f"{pair.stem}.json", json.dumps({"signature": signature, "rows": rows}))
    state.wait_for_everyone()
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    per_pair = [row for pair in pairs for row in cached(pair) or []]
    scores: dict[str, dict[str, dict[str, float]]] = {method_name: {}}
    for row in per_pair:
        scores.setdefault(row["method"], {})[row["stem"]] = {metric: row[metric] for metric in RANKED_METRICS}
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
    shutil.rmtree(cache, ignore_errors=True)
    state.wait_for_everyone()
    return rows


def pair_label(pair: PairRecord) -> str:
    return f"{pair.task.family}/{pair.dataset}"
