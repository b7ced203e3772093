"""Validation quality against training time, from the checkpoints of one training run.

    python scripts/reports/quality_curve.py RUN_DIR [--data ../shared/data]

For every complete checkpoint in RUN_DIR (train with --checkpoints_total_limit unset to keep them all): the
training wall time it was written at (state.json) and the benchmark-aligned validation score per task family of
its weights, one step. The U-Net architecture comes from the run's arguments (preset and config overrides, as
recorded in each checkpoint), so a run still in progress can be scored.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from fusionfm import FlowMatchFusionScheduler, FusionFMPipeline, build_unet
from fusionfm.evaluation.validation import validation_pairs, validation_quality
from fusionfm.tasks import FAMILIES
from fusionfm.training.checkpoints import list_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    checkpoints = list_checkpoints(args.run)
    run_args = json.loads((checkpoints[0] / "state.json").read_text())["args"]
    overrides = json.loads(Path(run_args["unet_config"]).read_text()) if run_args.get("unet_config") else {}
    unet = build_unet(run_args["unet_preset"], **overrides).eval()
    scheduler = FlowMatchFusionScheduler(coupling=run_args["coupling"])
    pipeline = FusionFMPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    pairs = {family: validation_pairs(args.data, family, args.resolution) for family in FAMILIES}
    print("| step | minutes | " + " | ".join(FAMILIES) + " | mean |\n|---:|---:|" + "---:|" * (len(FAMILIES) + 1))
    for folder in checkpoints:
        state = json.loads((folder / "state.json").read_text())["training_state"]
        unet.load_state_dict(load_file(folder / "model.safetensors"))
        scores = [validation_quality(pipeline, pairs[family], "fp32") for family in FAMILIES]
        print(f"| {state['step']} | {state.get('seconds', 0) / 60:.0f} | " + " | ".join(f"{s:.3f}" for s in scores)
              + f" | {sum(scores) / len(scores):.3f} |", flush=True)


if __name__ == "__main__":
    main()
