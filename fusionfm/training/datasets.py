"""Pseudo-labelled training pairs (folders written by ``python -m fusionfm.pseudolabel``), as luminance."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..atomic import save_png_atomic
from ..color import luminance
from ..datasets import PairRecord, find_pairs, task_matches
from ..folders import plan_folder
from ..image_processor import FusionImageProcessor, to_pil
from ..synthetic import SYNTHESIZERS, SyntheticPairs
from ..tasks import FusionTask, get_task


@dataclass(frozen=True)
class LabelledPair:
    """A training pair with its pseudo-label: where the three files are."""

    task: FusionTask
    dataset: str
    stem: str
    path_a: Path
    path_b: Path
    path_label: Path


class LabelledPairs(torch.utils.data.Dataset):
    """Source pairs with their pseudo-labels, as luminance, for training.

    Reads a folder written by ``python -m fusionfm.pseudolabel``: the selected rows of ``labels.csv`` name
    the pairs; real sources come from ``data_root``, synthetic ones from the folder's ``sources/``.
    Images are decoded on first use and kept as 8-bit luminance (a third of a float copy's memory;
    the labels are 8-bit anyway).

    Args:
        labels_dir: the pseudo-label folder.
        data_root: the ``shared/data`` folder with the real sources (unused for synthetic labels).
        task: keep only this task's pairs (a family name such as ``"MIF"`` keeps all its variants).
        exclude: (dataset, stem) of pairs to leave out (the validation split).

    Items are dicts of ``image_a``, ``image_b``, ``target``: (1, H, W) uint8, ``task_id``: int and ``task``: the
    task's name (a variant such as ``"MIF-CT"`` where the data says which).
    """

    def __init__(self, labels_dir: str | Path, data_root: str | Path | None = None,
                 task: str | FusionTask | None = None, exclude: set[tuple[str, str]] | None = None) -> None:
        self.labels_dir = Path(labels_dir)
        table = self.labels_dir / "labels.csv"
        if not table.is_file():
            raise FileNotFoundError(
                f"No labels.csv in {self.labels_dir}; build pseudo-labels first (python -m fusionfm.pseudolabel)."
            )
        requested = get_task(task) if task is not None else None
        with table.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["selected"] == "1"]
        rows = [row for row in rows if (requested is None or task_matches(get_task(row["task"]), requested))
                and (row["dataset"], row["stem"]) not in (exclude or set())]
        if not rows:
            raise ValueError(f"{table} holds no finished labels" + (f" for {requested.name}." if requested else "."))
        sources: dict[tuple[str, str], PairRecord] = {}
        real = [row for row in rows if not (self.labels_dir / row["dataset"] / "sources").is_dir()]
        if real:
            if data_root is None:
                raise ValueError(f"{table} labels real pairs; pass the data root that holds their sources.")
            for family, split in sorted({(get_task(row["task"]).family, row["split"]) for row in real}):
                sources |= {(p.dataset, p.stem): p for p in find_pairs(data_root, family, split)}
        self.pairs = [self._locate(row, sources) for row in sorted(rows, key=lambda r: (r["dataset"], r["stem"]))]
        self._processor = FusionImageProcessor()
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def _locate(self, row: dict[str, str], sources: dict[tuple[str, str], PairRecord]) -> LabelledPair:
        task, dataset, stem = get_task(row["task"]), row["dataset"], row["stem"]
        label = self.labels_dir / dataset / f"{stem}.png"
        synthetic = self.labels_dir / dataset / "sources"
        if synthetic.is_dir():
            path_a = synthetic / task.modality_a / f"{stem}.png"
            path_b = synthetic / task.modality_b / f"{stem}.png"
        elif (dataset, stem) in sources:
            path_a, path_b = sources[(dataset, stem)].path_a, sources[(dataset, stem)].path_b
        else:
            raise ValueError(f"{dataset}/{stem} has a label in {self.labels_dir} but no source pair in the data root.")
        return LabelledPair(task, dataset, stem, path_a, path_b, label)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        if index not in self._cache:
            pair = self.pairs[index]
            images = [self._processor.load(path) for path in (pair.path_a, pair.path_b, pair.path_label)]
            if len({tuple(image.shape[-2:]) for image in images}) != 1:
                raise ValueError(f"{pair.dataset}/{pair.stem}: sources and label differ in size.")
            gray = [(luminance(image[None])[0] * 255).round().to(torch.uint8) for image in images]
            self._cache[index] = {"image_a": gray[0], "image_b": gray[1], "target": gray[2]}
        task = self.pairs[index].task
        return {**self._cache[index], "task_id": task.class_id, "task": task.name}

    def random_crop(self, index: int, size: int, generator: torch.Generator, flip: bool = True) -> dict:
        """A random ``size`` x ``size`` crop of one item as float in [0, 1] (edge-padded when smaller),
        flipped left-right with probability 1/2 when ``flip``."""
        item = self[index]
        crop = random_crop(torch.cat([item["image_a"], item["image_b"], item["target"]]), size, generator, flip)
        return {"image_a": crop[0:1], "image_b": crop[1:2], "target": crop[2:3], "has_target": True,
                "task_id": item["task_id"], "task": item["task"]}


def random_crop(planes: torch.Tensor, size: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of (C, H, W) uint8 planes as float (C, size, size) in [0, 1], edge-padded
    when smaller, flipped left-right with probability 1/2 when ``flip``."""
    stacked = planes.float()[None] / 255.0
    height, width = stacked.shape[-2:]
    if height < size or width < size:
        stacked = F.pad(stacked, (0, max(size - width, 0), 0, max(size - height, 0)), mode="replicate")
        height, width = stacked.shape[-2:]
    top = int(torch.randint(height - size + 1, (1,), generator=generator))
    left = int(torch.randint(width - size + 1, (1,), generator=generator))
    crop = stacked[0, :, top : top + size, left : left + size]
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        crop = crop.flip(-1)
    return crop


class SourcePairs(torch.utils.data.Dataset):
    """Unlabelled training pairs of one task family, as 8-bit luminance, for the fidelity objectives.

    The real pairs of ``data_root``'s train split (none for MEF and MFF, whose real sets are test sets) and, for MEF
    and MFF, synthetic pairs of the natural training photographs (:mod:`fusionfm.synthetic`) with the
    photograph as their truth.

    Args:
        data_root: the ``shared/data`` folder (unused with ``folder``).
        task: a task family (``"IVF"``, ``"MIF"``, ``"MEF"``, ``"MFF"``) or a variant (``"MIF-CT"``).
        exclude: (dataset, stem) of pairs to leave out (the validation split).
        synthetic_seed: the synthetic pairs' seed (the validation split's synthetic pairs are those of seed 0).
        exclude_datasets: real data sets to leave out whole (a set kept aside to fine-tune on).
        folder: instead of ``data_root``, a user's folder of registered pairs in the layouts of
            :mod:`fusionfm.folders` (no synthetic pairs are added).

    Items are dicts of ``image_a``, ``image_b``, ``target``: (1, H, W) uint8 (the truth, or zeros), ``has_target``:
    bool, ``task_id``: int and ``task``: the task's name.
    """

    def __init__(self, data_root: str | Path | None, task: str | FusionTask,
                 exclude: set[tuple[str, str]] | None = None, synthetic_seed: int = 0,
                 exclude_datasets: set[str] | None = None, folder: str | Path | None = None) -> None:
        self.task = get_task(task)
        exclude = exclude or set()
        self._processor = FusionImageProcessor()
        if folder is not None:  # a user's own pairs, in the folder CLI's layouts
            real = [PairRecord(self.task, Path(folder).name, "train", job.name, *job.paths)
                    for job in plan_folder(Path(folder), self.task).jobs if len(job.paths) == 2]
        else:
            try:
                real = find_pairs(data_root, self.task, "train")
            except ValueError:  # MEF and MFF have no real training split
                real = []
        exclude_datasets = exclude_datasets or set()
        self.real = [pair for pair in real
                     if (pair.dataset, pair.stem) not in exclude and pair.dataset not in exclude_datasets]
        self.synthetic, self._synthetic_indices = None, []
        if folder is None and self.task.family in SYNTHESIZERS:
            self.synthetic = SyntheticPairs(data_root, self.task.family, "train", seed=synthetic_seed)
            dataset = f"synthetic-{self.synthetic.rows[0]['dataset']}" if self.synthetic.rows else ""
            self._synthetic_indices = [index for index, row in enumerate(self.synthetic.rows)
                                       if (dataset, row["stem"]) not in exclude]
        if not self.real and not self._synthetic_indices:
            raise ValueError(f"No {self.task.name} training pairs under {data_root} outside the excluded ones.")
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.real) + len(self._synthetic_indices)

    def __getitem__(self, index: int) -> dict:
        if index not in self._cache:
            if index < len(self.real):
                pair = self.real[index]
                images = [self._processor.load(path) for path in (pair.path_a, pair.path_b)]
                if images[0].shape[-2:] != images[1].shape[-2:]:
                    raise ValueError(f"{pair.dataset}/{pair.stem}: the two sources differ in size.")
                task, truth = pair.task, None
            else:
                made = self.synthetic[self._synthetic_indices[index - len(self.real)]]
                images, task, truth = [made.image_a, made.image_b], self.task, made.ground_truth
            gray = [_gray_uint8(image) for image in images]
            target = _gray_uint8(truth) if truth is not None else torch.zeros_like(gray[0])
            self._cache[index] = {"image_a": gray[0], "image_b": gray[1], "target": target,
                                  "has_target": truth is not None, "task_id": task.class_id, "task": task.name}
        return self._cache[index]

    def random_crop(self, index: int, size: int, generator: torch.Generator, flip: bool = True) -> dict:
        """A random ``size`` x ``size`` crop of one item as float in [0, 1] (see :func:`random_crop`)."""
        item = self[index]
        crop = random_crop(torch.cat([item["image_a"], item["image_b"], item["target"]]), size, generator, flip)
        return {"image_a": crop[0:1], "image_b": crop[1:2], "target": crop[2:3], "has_target": item["has_target"],
                "task_id": item["task_id"], "task": item["task"]}


def _gray_uint8(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> (1, H, W) uint8 luminance."""
    return (luminance(image[None])[0] * 255).round().to(torch.uint8)


def parse_label_folders(items: list[str], option: str = "--labels") -> dict[str, Path]:
    """``["IVF=labels/IVF", ...]`` (the items of ``option``) -> {task family: folder}.

    Raises:
        ValueError: an item is not TASK=DIR, names an unknown task, or a family twice.
    """
    folders = {}
    for item in items:
        task, separator, folder = item.partition("=")
        if not separator or not folder:
            raise ValueError(f"{option} takes TASK=DIR items, got {item!r}.")
        family = get_task(task).family
        if family in folders:
            raise ValueError(f"{option} names {family} twice.")
        folders[family] = Path(folder)
    return folders


def relabel_folder(labels_dir: str | Path, out_dir: str | Path, data_root: str | Path | None,
                   new_label: Callable[[LabelledPair], torch.Tensor | None]) -> tuple[int, int]:
    """Copy a pseudo-label folder, replacing labels: for each pair, ``new_label(pair)`` (an image (C, H, W) in
    [0, 1], written atomically) or, where it returns None, the original label file. The synthetic sources and
    ``labels.csv`` are copied too, so the copy trains like the original. Labels already in ``out_dir`` are kept
    (a stopped run resumes).

    Returns:
        (pairs in the folder, labels replaced in this call).
    """
    labels_dir, out_dir = Path(labels_dir), Path(out_dir)
    pairs = LabelledPairs(labels_dir, data_root)
    replaced = 0
    for pair in pairs.pairs:
        target = out_dir / pair.dataset / f"{pair.stem}.png"
        if target.is_file():
            continue
        label = new_label(pair)
        if label is not None:
            save_png_atomic(to_pil(label), target)
            replaced += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pair.path_label, target)
    for sources in labels_dir.glob("*/sources"):
        shutil.copytree(sources, out_dir / sources.parent.name / "sources", dirs_exist_ok=True)
    shutil.copyfile(labels_dir / "labels.csv", out_dir / "labels.csv")
    return len(pairs), replaced
