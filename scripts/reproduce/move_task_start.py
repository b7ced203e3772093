"""Give one task of a trained model a new start (detail gains, the consistent detail choice's weight) and keep what
it learned: the step that moved the bundled model's MEF start in session 20 (docs/quality.md).

    python scripts/reproduce/move_task_start.py MODEL_DIR --task MEF --detail_gains 1.12 1.12 1.12 1.12 \\
        --detail_consistency 0.9

MODEL_DIR is a saved pipeline with the pyramid head's activity prior; its ``unet/`` folder is rewritten atomically
(:meth:`fusionfm.FusionUNet.move_task_start`) and its ``training_summary.json`` records the move.
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
    parser.add_argument("--task", required=True, help="a task class (IVF, MIF, MEF, MFF)")
    parser.add_argument("--detail_gains", type=float, nargs="+", help="one start gain per detail level")
    parser.add_argument("--detail_consistency", type=float, help="weight of the consistent detail choice, [0, 1]")
    args = parser.parse_args()
    if args.detail_gains is None and args.detail_consistency is None:
        parser.error("Nothing to move: give --detail_gains and/or --detail_consistency.")
    task = get_task(args.task)
    if task.name != task.family:
        parser.error(f"{task.name} is a variant of {task.family}: move the class (its variants keep their own start).")
    folder = args.model_dir / "unet"
    unet = FusionUNet.from_pretrained(folder)
    unet.move_task_start(task.class_id, args.detail_gains, args.detail_consistency)
    with staged_folder(folder) as staging:
        save_pretrained_portable(unet, staging)
    summary = args.model_dir / "training_summary.json"
    if summary.is_file():  # its scores describe the model before the move: say so
        record = json.loads(summary.read_text())
        moves = record.get("start_moved_after_training", [])
        moves.append({"task": task.name, "detail_gains": args.detail_gains,
                      "detail_consistency": args.detail_consistency})
        record["start_moved_after_training"] = moves
        write_text_atomic(summary, json.dumps(record, indent=1))
    print(f"{args.task}'s start moved in {folder}.")


if __name__ == "__main__":
    main()
