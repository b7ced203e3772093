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
import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import save_png_atomic
from .image_processor import load_image
from .tasks import FusionTask, get_task
from .threads import default_threads

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
STACK_FAMILIES = ("MEF", "MFF")


@dataclass
class FusionJob:
    """One output: its name and the files fused into it (a pair in (a, b) order, or a stack's frames)."""

    name: str
    paths: list[Path]


@dataclass
class FolderPlan:
    """What a folder holds for one task: the fusions, and every entry left out with the reason."""

    jobs: list[FusionJob] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image of a pair or stack (None: it can)."""
    if path.is_symlink() and not path.exists():
        try:
            path.stat()
        except OSError as error:
            return "a symbolic link loop" if error.errno == errno.ELOOP else "a broken symbolic link"
    if path.is_dir():
        return ("a folder named like an image file" if path.suffix.lower() in IMAGE_SUFFIXES
                else None)
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file ({', '.join(IMAGE_SUFFIXES)})"
    return None


def _images(folder: Path, plan: FolderPlan) -> list[Path]:
    """The image files of ``folder`` in name order; anything else in it goes to ``plan.skipped``."""
    images = []
    for path in sorted(folder.iterdir()):
        problem = _entry_problem(path)
        if problem is None and path.is_file():
            images.append(path)
        elif problem is not None:
            plan.skipped.append((path, problem))
        else:
            plan.skipped.append((path, "a folder inside a folder of images (not searched)"))
    return images


def _pairs_by_folder(folder: Path, task: FusionTask, plan: FolderPlan) -> None:
    """Layout ``a/<stem>.*`` + ``b/<stem>.*``: pairs by stem; unmatched files and other entries are skipped."""
    sides = [folder / task.modality_a, folder / task.modality_b]
    by_stem = [{path.stem: path for path in _images(side, plan)} for side in sides]
    for stem, path in by_stem[0].items():
        if stem in by_stem[1]:
            plan.jobs.append(FusionJob(stem, [path, by_stem[1][stem]]))
        else:
            plan.skipped.append((path, f"no partner {task.modality_b}/{stem}.*"))
    for stem, path in by_stem[1].items():
        if stem not in by_stem[0]:
            plan.skipped.append((path, f"no partner {task.modality_a}/{stem}.*"))
    for entry in sorted(folder.iterdir()):
        if entry not in sides:
            plan.skipped.append((entry, f"not in {task.modality_a}/ or {task.modality_b}/ (the pairs' folders)"))


def _pairs_by_name(folder: Path, task: FusionTask, plan: FolderPlan) -> None:
    """Layout ``<stem>_<a>.*`` + ``<stem>_<b>.*`` (and, for MEF and MFF, one sub-folder of frames per stack)."""
    suffixes = (f"_{task.modality_a}", f"_{task.modality_b}")
    sides: list[dict[str, Path]] = [{}, {}]
    for path in sorted(folder.iterdir()):
        problem = _entry_problem(path)
        if problem is not None:
            plan.skipped.append((path, problem))
        elif path.is_dir():
            if task.family not in STACK_FAMILIES:
                plan.skipped.append((path, f"a folder ({task.name} fuses pairs of files; stacks of frames are for "
                                           "MEF and MFF)"))
                continue
            frames = _images(path, plan)
            if len(frames) >= 2:
                plan.jobs.append(FusionJob(path.name, frames))
            else:
                plan.skipped.append((path, f"a stack folder with {len(frames)} image(s); a stack needs at least 2"))
        else:
            side = next((index for index, suffix in enumerate(suffixes) if path.stem.endswith(suffix)), None)
            if side is None:
                plan.skipped.append((path, f"the name does not end in {suffixes[0]} or {suffixes[1]}"))
                continue
            stem = path.stem[: -len(suffixes[side])]
            if stem in sides[side]:
                plan.skipped.append((path, f"a second file for {stem}{suffixes[side]} (kept "
                                           f"{sides[side][stem].name})"))
            else:
                sides[side][stem] = path
    for stem, path in sides[0].items():
        if stem in sides[1]:
            plan.jobs.append(FusionJob(stem, [path, sides[1][stem]]))
        else:
            plan.skipped.append((path, f"no partner {stem}{suffixes[1]}.*"))
    plan.skipped += [(path, f"no partner {stem}{suffixes[0]}.*") for stem, path in sides[1].items()
                     if stem not in sides[0]]


def plan_folder(folder: Path, task: FusionTask) -> FolderPlan:
    """The fusions under ``folder`` (see the module docstring), sorted by name, and every entry left out.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: nothing to fuse found, with what was looked for.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder at {folder}.")
    plan = FolderPlan()
    if (folder / task.modality_a).is_dir() and (folder / task.modality_b).is_dir():
        _pairs_by_folder(folder, task, plan)
    else:
        _pairs_by_name(folder, task, plan)
    if not plan.jobs:
        raise ValueError(
            f"Nothing to fuse in {folder}: expected files <stem>_{task.modality_a}.png with <stem>_{task.modality_b}"
            f".png, or sub-folders {task.modality_a}/ and {task.modality_b}/ with the same file names"
            + (", or one sub-folder of frames per stack" if task.family in STACK_FAMILIES else "")
            + " (python -m fusionfm.fuse --help shows the layouts)."
        )
    plan.jobs.sort(key=lambda job: job.name)
    return plan


def find_jobs(folder: Path, task: FusionTask) -> list[FusionJob]:
    """The fusions under ``folder`` (:func:`plan_folder` without the entries left out)."""
    return plan_folder(folder, task).jobs


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
