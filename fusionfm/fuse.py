"""Fuse whole folders: every pair or every frame stack under a folder, one fused PNG each.

    python -m fusionfm.fuse --task IVF --input shoot/ --out fused/
    python -m fusionfm.fuse --task MEF --input brackets/ --out fused/      (one sub-folder per bracket)

What counts as one fusion under ``--input``:

- sub-folders holding image files: one stack each (frames in name order; MEF and MFF only), written as
  ``OUT/<sub-folder>.png``;
- files named ``<stem>_<a>.<ext>`` and ``<stem>_<b>.<ext>`` with the task's modality names (``ir``/``vi``,
  ``mri``/``ct``, ``under``/``over``, ``a``/``b``, ...), or the same stems in sub-folders named after the two
  modalities (``ir/`` and ``vi/``, the layout of the project's data): one pair each, written as ``OUT/<stem>.png``.

Resumable: a fusion whose PNG exists is skipped (results are written atomically, so an existing one is whole).
A fusion that fails (an unreadable file, mismatched sizes, ...) is reported and skipped; the others go on, and
the exit status is 1 when any failed. Also the console script ``fusionfm-fuse``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import save_png_atomic
from .image_processor import load_image
from .tasks import FusionTask, get_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class FusionJob:
    """One output: its name and the files fused into it (a pair in (a, b) order, or a stack's frames)."""

    name: str
    paths: list[Path]


def _images(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def find_jobs(folder: Path, task: FusionTask) -> list[FusionJob]:
    """The fusions under ``folder`` (see the module docstring), sorted by name.

    Raises:
        ValueError: nothing to fuse found, with what was looked for.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder at {folder}.")
    modality_folders = [folder / task.modality_a, folder / task.modality_b]
    jobs: list[FusionJob] = []
    if all(path.is_dir() for path in modality_folders):
        partners = {path.stem: path for path in _images(modality_folders[1])}
        jobs = [FusionJob(path.stem, [path, partners[path.stem]]) for path in _images(modality_folders[0])
                if path.stem in partners]
    else:
        suffix_a, suffix_b = f"_{task.modality_a}", f"_{task.modality_b}"
        by_stem = {path.stem: path for path in _images(folder)}
        jobs = [FusionJob(stem[: -len(suffix_a)], [path, by_stem[stem[: -len(suffix_a)] + suffix_b]])
                for stem, path in by_stem.items()
                if stem.endswith(suffix_a) and stem[: -len(suffix_a)] + suffix_b in by_stem]
        if task.family in ("MEF", "MFF"):
            jobs += [FusionJob(sub.name, _images(sub)) for sub in sorted(folder.iterdir())
                     if sub.is_dir() and len(_images(sub)) >= 2]
    if not jobs:
        raise ValueError(
            f"Nothing to fuse in {folder}: expected files <stem>_{task.modality_a}.png with <stem>_{task.modality_b}"
            f".png, or sub-folders {task.modality_a}/ and {task.modality_b}/ with the same file names"
            + (", or one sub-folder of frames per stack" if task.family in ("MEF", "MFF") else "") + "."
        )
    return sorted(jobs, key=lambda job: job.name)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusionfm.fuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF or MFF")
    parser.add_argument("--input", required=True, type=Path, help="folder of pairs or of stack sub-folders")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; reused to resume)")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=1, help="flow steps (pairs only; stacks use one)")
    parser.add_argument("--processing-resolution", type=int, default=0,
                        help="long side to fuse at (0: each image's own size)")
    parser.add_argument("--resize", action="store_true", help="resize mismatched images to the first one")
    parser.add_argument("--detail-gain", type=float, default=None,
                        help="contrast gain of every detail level (default: the model's own, which sharpens; "
                             "1: the sources' own contrast, the most faithful)")
    parser.add_argument("--natural-exposure", action="store_true",
                        help="MEF pairs: blend by well-exposedness (natural skies and highlights, less contrast)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        task = get_task(args.task)
        jobs = find_jobs(args.input, task)
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from .pipeline_fusionfm import FusionFMPipeline

    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    try:
        pipeline.check_detail_gain(args.detail_gain)
        pipeline.check_natural_exposure(args.natural_exposure, task)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    todo = [job for job in jobs if not (args.out / f"{job.name}.png").is_file()]
    failed: list[tuple[str, str]] = []
    for job in tqdm(todo, desc=f"fusing ({task.name})", unit="fusion", disable=args.no_progress):
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
        except (FileNotFoundError, ValueError, TypeError, OSError) as error:
            failed.append((job.name, str(error)))
            tqdm.write(f"skipped {job.name}: {error}", file=sys.stderr)
    print(f"{len(todo) - len(failed)} fused, {len(jobs) - len(todo)} already done, {len(failed)} failed; "
          f"results in {args.out}")
    for name, reason in failed:
        print(f"  failed: {name}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
