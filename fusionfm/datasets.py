"""Image-pair data sets in the layout of ``shared/data``:

    <family>/<dataset>/<split>/<modality>/<stem>.<ext>      source images
    <family>/<dataset>/priors/<METHOD>/<stem>.<ext>         other methods' fused images

Pairs come from ``manifest.csv`` when the root has one, else from scanning the folders (the two
modality folders of a pair must hold the same stems).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from .image_processor import FusionImageProcessor
from .tasks import TASKS, FusionTask, get_task, task_for_modality_b


@dataclass(frozen=True)
class PairRecord:
    """One registered pair on disk."""

    task: FusionTask
    dataset: str
    split: str
    stem: str
    path_a: Path
    path_b: Path

    @property
    def dataset_dir(self) -> Path:
        """``<root>/<family>/<dataset>``: where ``priors/`` lives."""
        return self.path_a.parents[2]


def task_matches(task: FusionTask, requested: FusionTask) -> bool:
    # "MIF" asks for every MIF variant; "MIF-PET" for the PET pairs only.
    if requested.name == requested.family:
        return task.family == requested.family
    return task.name == requested.name


def find_pairs(
    data_root: str | Path, task: str | FusionTask, split: str, datasets: list[str] | None = None
) -> list[PairRecord]:
    """The pairs of a task and split, sorted by (dataset, stem).

    Raises:
        FileNotFoundError: the root or the task's folder does not exist.
        ValueError: no pairs match, or (when scanning) stems without a partner image.
    """
    root = Path(data_root)
    requested = get_task(task)
    if not root.is_dir():
        raise FileNotFoundError(f"No data folder at {root}.")
    manifest = root / "manifest.csv"
    pairs = _from_manifest(root, manifest) if manifest.is_file() else _from_folders(root, requested)
    selected = [
        pair for pair in pairs
        if task_matches(pair.task, requested) and pair.split == split and (not datasets or pair.dataset in datasets)
    ]
    if not selected:
        known = sorted({pair.dataset for pair in pairs if task_matches(pair.task, requested)})
        raise ValueError(
            f"No {requested.name} pairs for split {split!r}"
            + (f" in datasets {datasets}" if datasets else "")
            + f" under {root}. Datasets found for {requested.name}: {', '.join(known) or 'none'}."
        )
    return sorted(selected, key=lambda pair: (pair.dataset, pair.stem))


def _from_manifest(root: Path, manifest: Path) -> list[PairRecord]:
    with manifest.open(newline="") as handle:
        return [
            PairRecord(task_for_modality_b(row["task"], row["modality_b"]), row["dataset"], row["split"], row["stem"],
                       root / row["path_a"], root / row["path_b"])
            for row in csv.DictReader(handle)
        ]


def _from_folders(root: Path, requested: FusionTask) -> list[PairRecord]:
    family_dir = root / requested.family
    if not family_dir.is_dir():
        raise FileNotFoundError(f"No {requested.family} folder under {root} (expected {family_dir}).")
    variants = {task.modality_b: task for task in TASKS.values()
                if task.family == requested.family and task.name != "MIF"}
    pairs = []
    for split_dir in sorted(family_dir.glob("*/*")):
        if not split_dir.is_dir() or split_dir.name == "priors":
            continue
        dataset, split = split_dir.parent.name, split_dir.name
        for modality_b, task in variants.items():
            dir_a, dir_b = split_dir / task.modality_a, split_dir / modality_b
            if not (dir_a.is_dir() and dir_b.is_dir()):
                continue
            files_a = {p.stem: p for p in dir_a.iterdir() if p.is_file()}
            files_b = {p.stem: p for p in dir_b.iterdir() if p.is_file()}
            unmatched = sorted(set(files_a) ^ set(files_b))
            if unmatched:
                raise ValueError(
                    f"{split_dir}: stems without a partner in {task.modality_a}/ or {modality_b}/: "
                    f"{', '.join(unmatched[:10])}{' ...' if len(unmatched) > 10 else ''}. Every image needs its pair."
                )
            pairs += [PairRecord(task, dataset, split, stem, files_a[stem], files_b[stem]) for stem in files_a]
    return pairs


def load_pair(pair: PairRecord, processor: FusionImageProcessor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images of a pair as (1, C, H, W) float in [0, 1].

    Raises:
        ValueError: an unreadable file (named), or images of different sizes.
    """
    processor = processor or FusionImageProcessor()
    image_a, image_b = processor.load(pair.path_a), processor.load(pair.path_b)
    if image_a.shape[-2:] != image_b.shape[-2:]:
        raise ValueError(
            f"{pair.dataset}/{pair.stem}: {pair.path_a.name} is {tuple(image_a.shape[-2:])} but {pair.path_b.name} "
            f"is {tuple(image_b.shape[-2:])}; the two images of a pair must have one size."
        )
    return image_a[None], image_b[None]
