"""Fuse whole folders: every pair or every frame stack under a folder, one fused PNG each.

Layouts of --input (the task's modality names: ir/vi, mri/ct, mri/pet, mri/spect, under/over, a/b):

  shoot/                          shoot/                        brackets/          (MEF and MFF only)
    0001_ir.png                     ir/0001.png                   beach/0.jpg
    0001_vi.png                     ir/0002.png                   beach/1.jpg
    0002_ir.png                     vi/0001.png                   beach/2.jpg
    0002_vi.png                     vi/0002.png                   city/a.jpg  ...

  python -m fusionfm.fuse --task IVF --input shoot/ --out fused/       -> fused/0001.png, fused/0002.png
  python -m fusionfm.fuse --task MEF --input brackets/ --out fused/    -> fused/beach.png, fused/city.png
  accelerate launch --multi_gpu --num_processes 2 -m fusionfm.fuse ...  (the pairs split between processes)

Every entry of --input that is not fused (a file without its partner, a folder named like an image, a broken link,
a file that is not an image, a fusion that fails) is reported with the reason, and the exit status is then 1.
Resumable: a fusion whose PNG exists is skipped (results are written atomically, so an existing one is whole).
Also the console script ``fusionfm-fuse``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import save_png_atomic
from .folders import plan_folder
from .image_processor import load_image
from .tasks import get_task
from .threads import default_threads


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusionfm.fuse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF or MFF")
    parser.add_argument("--input", required=True, type=Path, help="folder of pairs or of stack sub-folders")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; reused to resume)")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=1, help="flow steps (pairs only; stacks use one)")
    parser.add_argument("--processing-resolution", type=int, default=0,
                        help="long side to fuse at (0: each image's own size)")
    parser.add_argument("--resize", action="store_true", help="resize mismatched images to the first one")
    parser.add_argument("--detail-gain", type=float, default=None,
                        help="contrast gain of every detail level (default: the model's own; 1: the sources' own "
                             "contrast)")
    parser.add_argument("--natural-exposure", action="store_true",
                        help="MEF pairs: blend by well-exposedness (natural skies and highlights, less contrast)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (0: the CPU count divided by the processes on this machine)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        task = get_task(args.task)
        plan = plan_folder(args.input, task)
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .distributed import process_state
    from .pipeline_fusionfm import FusionFMPipeline

    state = process_state()
    torch.set_num_threads(args.threads or default_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    try:
        pipeline.check_options(task, args.steps, args.processing_resolution, 1, "pil", 0, args.detail_gain,
                               args.natural_exposure, None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    todo = [job for job in plan.jobs if not (args.out / f"{job.name}.png").is_file()]
    failed: list[tuple[str, str]] = []
    with state.split_between_processes(todo) as mine:
        for job in tqdm(mine, desc=f"fusing ({task.name})", unit="fusion",
                        disable=args.no_progress or not state.is_main_process):
            try:
                images = [load_image(path) for path in job.paths]
                if len(images) == 2:
                    result = pipeline(images[0], images[1], task=task, num_inference_steps=args.steps,
                                      processing_resolution=args.processing_resolution, resize_b_to_a=args.resize,
                                      detail_gain=args.detail_gain, natural_exposure=args.natural_exposure)
                else:
                    result = pipeline(images, task=task, processing_resolution=args.processing_resolution,
                                      resize_b_to_a=args.resize, detail_gain=args.detail_gain,
                                      natural_exposure=args.natural_exposure)
                save_png_atomic(result.images[0], args.out / f"{job.name}.png")
            except (FileNotFoundError, ValueError, TypeError, OSError, RuntimeError) as error:
                failed.append((job.name, str(error)))
                tqdm.write(f"not fused: {job.name}: {error}", file=sys.stderr)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        failed = gather_object(failed)
    if not state.is_main_process:
        return 1 if failed or plan.skipped else 0
    for path, reason in plan.skipped:
        print(f"  not fused: {path}: {reason}", file=sys.stderr)
    for name, reason in failed:
        print(f"  failed: {name}: {reason}", file=sys.stderr)
    print(f"{len(todo) - len(failed)} fused, {len(plan.jobs) - len(todo)} already done, {len(failed)} failed, "
          f"{len(plan.skipped)} entries not fusable; results in {args.out}")
    return 1 if failed or plan.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
