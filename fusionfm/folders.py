"""What a user's folder holds for one task: the fusions (pairs, stacks of frames) and every entry that is not one.

Layouts (the task's modality names: ir/vi, mri/ct, mri/pet, mri/spect, under/over, a/b): files ``<stem>_<a>.*`` with
``<stem>_<b>.*``; sub-folders ``<a>/`` and ``<b>/`` holding the same file names; for MEF and MFF also one sub-folder of
frames per stack. Used by the folder CLI (:mod:`fusionfm.fuse`) and by training on a user's own pairs.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import FusionTask

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
