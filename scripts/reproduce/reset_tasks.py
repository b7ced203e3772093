"""Return some tasks of a trained model to their start (the activity prior with its starting gains): the last step
of the bundled model's recipe, for the tasks whose validation score training lowered on both seeds.

    python scripts/reproduce/reset_tasks.py MODEL_DIR --tasks MIF MFF

MODEL_DIR is a saved pipeline (its ``unet/`` folder is rewritten atomically) with task gates
(:meth:`fusionfm.FusionUNet.reset_task`); its ``training_summary.json`` records the reset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusionfm import FusionUNet
from fusionfm.atomic import save_pretrained_portable, staged_folder, write_text_atomic
from fusionfm.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", required=True)
    args = parser.parse_args()
    folder = args.model_dir / "unet"
    unet = FusionUNet.from_pretrained(folder)
    for task in args.tasks:
        unet.reset_task(get_task(task).class_id)
    with staged_folder(folder) as staging:
        save_pretrained_portable(unet, staging)
    summary = args.model_dir / "training_summary.json"
    if summary.is_file():  # its weights hash and scores describe the model before the reset: say so
        record = json.loads(summary.read_text())
        record["reset_to_start_after_training"] = sorted(set(record.get("reset_to_start_after_training", []))
                                                         | set(args.tasks))
        write_text_atomic(summary, json.dumps(record, indent=1))
    print(f"{', '.join(args.tasks)} returned to the start in {folder}.")


if __name__ == "__main__":
    main()
