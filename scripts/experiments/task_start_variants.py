"""A trained model with one task's start changed, judged on the validation split per data set.

    python scripts/experiments/task_start_variants.py fusionfm/default_model --task IVF \
        --variants shipped gains=1.05 base=sharper "gains=1.04,1.04,1.04,1 share=1 epsilon=0.03"
        [--metrics SF AG Qabf] [--resolution 0] [--data ../shared/data]

Each variant is a space-separated list of changes to the task's start: ``gains=G`` (one gain for every detail level
or one per level, finest first) and ``share=S`` (the consistent detail choice's weight) through
:meth:`FusionUNet.move_task_start`, which keeps what the task learned; ``epsilon=E`` (the consistent map's epsilon)
and ``base=RULE`` (one of ``fusionfm.pyramid.BASE_ACTIVITIES``) in a copy of the model's config. ``shipped`` is the
model as it is. Prints, per variant, the benchmark-aligned score of the task family and, per validation data set, the
score and the mean of each of ``--metrics``, with the best built-in prior's (docs/quality.md, sessions 20-21). The
pairs are fused at their own size by default (``--resolution 0``, as the benchmarks and users fuse).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from fusionfm import FusionFMPipeline
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.evaluation.validation import benchmark_score, best_prior_mean, validation_fusions, validation_pairs
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.pyramid import BASE_ACTIVITIES
from fusionfm.tasks import get_task


def parse_variant(text: str) -> dict[str, str]:
    """``"gains=1.05 base=sharper"`` -> {"gains": "1.05", "base": "sharper"}; ``"shipped"`` -> {}."""
    if text == "shipped":
        return {}
    changes = dict(item.split("=", 1) for item in text.split())
    unknown = set(changes) - {"gains", "share", "epsilon", "base"}
    if unknown:
        raise SystemExit(f"Unknown change(s) {sorted(unknown)} in variant {text!r}: use gains, share, epsilon, base.")
    if changes.get("base", BASE_ACTIVITIES[0]) not in BASE_ACTIVITIES:
        raise SystemExit(f"base must be one of {', '.join(BASE_ACTIVITIES)}, got {changes['base']!r}.")
    return changes


def load_variant(model: str, task_id: int, changes: dict[str, str], workdir: Path) -> FusionFMPipeline:
    """The model with ``changes`` to task ``task_id``'s start (config edits in a copy, then the moved start)."""
    folder = Path(model)
    if "epsilon" in changes or "base" in changes:
        folder = workdir / "model"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(model, folder)
        config_path = folder / "unet" / "config.json"
        config = json.loads(config_path.read_text())
        if "epsilon" in changes:
            epsilons = config["consistency_epsilon"]
            epsilons = list(epsilons) if isinstance(epsilons, list) else [epsilons] * config["num_tasks"]
            epsilons[task_id] = float(changes["epsilon"])
            config["consistency_epsilon"] = epsilons
        if "base" in changes:
            config["base_activity"][task_id] = changes["base"]
        config_path.write_text(json.dumps(config, indent=2))
    pipeline = FusionFMPipeline.from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    if "gains" in changes or "share" in changes:
        gains = None
        if "gains" in changes:
            gains = [float(gain) for gain in changes["gains"].split(",")]
            if len(gains) == 1:
                gains *= len(pipeline.unet.config.detail_gains[task_id])
        share = float(changes["share"]) if "share" in changes else None
        pipeline.unet.move_task_start(task_id, gains, share)
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", required=True, help="a task class: IVF, MIF, MEF or MFF")
    parser.add_argument("--variants", nargs="+", default=["shipped"])
    parser.add_argument("--metrics", nargs="+", default=["SF", "AG", "Qabf"], choices=RANKED_METRICS)
    parser.add_argument("--resolution", type=int, default=0)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    task = get_task(args.task)
    variants = {text: parse_variant(text) for text in args.variants}
    pairs = validation_pairs(args.data, task, args.resolution)
    groups = {dataset: [pair for pair in pairs if pair.dataset == dataset]
              for dataset in dict.fromkeys(pair.dataset for pair in pairs)}
    columns = [f"{dataset} ({len(group)}): score / " + " / ".join(args.metrics) for dataset, group in groups.items()]
    print(f"| {task.family} variant | score | " + " | ".join(columns) + " |\n|---|---:|" + "---|" * len(groups))
    with tempfile.TemporaryDirectory() as workdir:
        for text, changes in variants.items():
            pipeline = load_variant(args.model, task.class_id, changes, Path(workdir))
            fusions = dict(zip(map(id, pairs), validation_fusions(pipeline, pairs, "fp32"), strict=True))
            scores = {id(pair): benchmark_score(fusions[id(pair)], pair) for pair in pairs}
            cells = []
            for group in groups.values():
                means = dict.fromkeys(args.metrics, 0.0)
                for pair in group:
                    values = ranked_metrics(fusions[id(pair)], to_gray_255(pair.image_a), to_gray_255(pair.image_b))
                    for metric in args.metrics:
                        means[metric] += values[metric] / len(group)
                group_score = sum(scores[id(pair)] for pair in group) / len(group)
                cells.append(f"{group_score:.3f} / " + " / ".join(f"{means[m]:.4g}" for m in args.metrics))
            print(f"| {text} | {sum(scores.values()) / len(pairs):.4f} | " + " | ".join(cells) + " |", flush=True)
    best = [[best_prior_mean(group, metric) for metric in args.metrics] for group in groups.values()]
    print("| best built-in prior | | " + " | ".join(" / ".join(f"{value:.4g} ({prior})" for prior, value in row)
                                                  for row in best) + " |")


if __name__ == "__main__":
    main()
