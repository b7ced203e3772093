"""The pseudo-label builder: stage 1 (task-aware selection) and stage 2 (Fusion Refiner) for every pair.

:func:`build_labels` writes, under its output folder (``python -m fusionfm.pseudolabel`` is its CLI):

- ``<dataset>/<stem>.png``: the label (8-bit, L or RGB by the task's colour rule);
- for synthetic pairs also ``<dataset>/sources/<modality>/<stem>.png`` and ``<dataset>/truth/<stem>.png``;
- ``labels.csv``: one row per candidate of every pair (its origin, the twelve metrics, the weighted
  selection score, whether it was selected), plus, on the selected row, whether the Fusion Refiner's
  output was kept (``refined``) and the selection score before and after refinement (stage 2);
- ``refiner/<family>.safetensors``: the decomposition network, trained on the run's source pairs.

Resumable: a pair counts as done when its label file exists and its rows are in the CSV; a killed run
leaves neither a half-written PNG (written to a temporary file, then renamed) nor counted partial rows.
Deterministic: the same arguments give the same files, with one process or several
(``accelerate launch -m fusionfm.pseudolabel ...`` splits the pairs between processes).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import save_png_atomic, write_csv_atomic
from ..color import luminance
from ..datasets import PairRecord, find_pairs, load_pair
from ..distributed import process_state
from ..image_processor import to_pil
from ..metrics.fusion import METRIC_NAMES
from ..priors import ExternalPriors, priors_for, run_prior
from ..synthetic import SyntheticPairs
from ..tasks import FusionTask, get_task
from .refiner import DecompositionNet, RefinerConfig, load_decomposer, refine_image, save_decomposer, train_decomposer
from .regions import region_select
from .selection import SELECTION_WEIGHTS, Selection, candidate_metrics, select, weighted_scores

CSV_COLUMNS = ["task", "dataset", "split", "stem", "candidate", "origin", "selected", "score", *METRIC_NAMES,
               "refined", "score_before", "score_after"]


@dataclass
class LabelJob:
    """One pair to label: where it comes from and how to load it."""

    task: FusionTask
    dataset: str
    split: str
    stem: str
    external: ExternalPriors | None = None
    synthetic: tuple[SyntheticPairs, int] | None = None
    record: PairRecord | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.dataset, self.stem


def real_jobs(data_root: Path, task: str, split: str, datasets: list[str] | None, use_external: bool,
              limit: int | None = None) -> list[LabelJob]:
    jobs, externals = [], {}
    for pair in find_pairs(data_root, task, split, datasets)[:limit]:
        if use_external and pair.dataset not in externals:
            externals[pair.dataset] = ExternalPriors(pair.dataset_dir)
        jobs.append(LabelJob(pair.task, pair.dataset, split, pair.stem, externals.get(pair.dataset), record=pair))
    return jobs


def synthetic_jobs(data_root: Path, task: str, split: str, seed: int, limit: int | None) -> list[LabelJob]:
    pairs = SyntheticPairs(data_root, get_task(task).family, split, seed=seed, limit=limit)
    dataset = f"synthetic-{pairs.rows[0]['dataset']}"
    return [LabelJob(get_task(task), dataset, split, row["stem"], synthetic=(pairs, index))
            for index, row in enumerate(pairs.rows)]


class LabelStore:
    """The output folder: label files plus the CSV, with resume bookkeeping.

    One process (``shard=None``) appends to ``labels.csv`` itself. Under several processes each appends to its
    own ``.labels-<shard>.csv``; :meth:`merge_shards` folds them into ``labels.csv`` (also what a killed
    multi-process run left, when the next run opens the store).
    """

    def __init__(self, out_dir: Path, shard: int | None = None) -> None:
        self.out_dir = out_dir
        self.csv_path = out_dir / "labels.csv"
        self.append_path = self.csv_path if shard is None else out_dir / f".labels-{shard}.csv"
        out_dir.mkdir(parents=True, exist_ok=True)
        if shard is None:
            self.merge_shards()
        self.finished = self._recover(rewrite=shard is None)
        if shard is not None:
            write_csv_atomic(self.append_path, [CSV_COLUMNS])

    def label_path(self, job: LabelJob) -> Path:
        return self.out_dir / job.dataset / f"{job.stem}.png"

    def _read(self, path: Path) -> list[list[str]]:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != CSV_COLUMNS:
                raise ValueError(f"{path} was not written by this tool (unexpected header); use another --out.")
            return [row for row in reader if len(row) == len(CSV_COLUMNS)]  # a torn last row is dropped

    def _recover(self, rewrite: bool) -> set[tuple[str, str]]:
        """Keys of complete pairs (label file and rows); with ``rewrite``, drop the other rows (atomically)."""
        if not self.csv_path.is_file():
            write_csv_atomic(self.csv_path, [CSV_COLUMNS])
            return set()
        rows = self._read(self.csv_path)
        selected = {(row[1], row[3]) for row in rows if row[6] == "1"}
        finished = {key for key in selected if (self.out_dir / key[0] / f"{key[1]}.png").is_file()}
        if rewrite:
            write_csv_atomic(self.csv_path, [CSV_COLUMNS, *[row for row in rows if (row[1], row[3]) in finished]])
        return finished

    def merge_shards(self, order: list[tuple[str, str]] | None = None) -> None:
        """Fold the per-process CSVs into ``labels.csv`` and delete them; with ``order`` (pair keys), sort the
        pairs' rows by it, so that any number of processes writes the same file as one."""
        shards = sorted(self.out_dir.glob(".labels-*.csv"))
        rows = self._read(self.csv_path) if self.csv_path.is_file() else []
        for shard in shards:
            rows += self._read(shard)
        if order is not None:
            position = {key: index for index, key in enumerate(order)}
            rows.sort(key=lambda row: position.get((row[1], row[3]), len(position)))  # stable: candidate order kept
        if shards or order is not None:
            write_csv_atomic(self.csv_path, [CSV_COLUMNS, *rows])
        for shard in shards:
            shard.unlink()

    def append(self, rows: list[dict]) -> None:
        with self.append_path.open("a", newline="") as handle:
            csv.DictWriter(handle, CSV_COLUMNS).writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())


REGIONS_CANDIDATE = "regions"
"""Name of the region-level merge of the other candidates (:mod:`fusionfm.labels.regions`) in the pool."""


def candidates_for(job: LabelJob, image_a: torch.Tensor, image_b: torch.Tensor,
                   regions: bool = False) -> dict[str, tuple[str, torch.Tensor]]:
    """name -> (origin, fused image (1, C, H, W)) for the built-in priors and any external outputs, plus with
    ``regions`` their region-level merge."""
    candidates = {prior.name: ("builtin", run_prior(prior.name, image_a, image_b, job.task))
                  for prior in priors_for(job.task)}
    if job.external is not None:
        size = tuple(image_a.shape[-2:])
        for method in job.external.paths(job.stem):
            candidates[method] = ("external", job.external.load(method, job.stem, size))
    if regions:
        merged = region_select({name: image for name, (_, image) in candidates.items()}, image_a, image_b, job.task)
        candidates[REGIONS_CANDIDATE] = ("regions", merged.label)
    return candidates


def load_sources(job: LabelJob, store: LabelStore | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair's images (1, C, H, W); synthetic pairs are also written out when a store is given."""
    if job.synthetic is None:
        return load_pair(job.record)
    dataset, index = job.synthetic
    pair = dataset[index]
    if store is not None:
        folder = store.out_dir / job.dataset
        save_png_atomic(to_pil(pair.image_a), folder / "sources" / job.task.modality_a / f"{job.stem}.png")
        save_png_atomic(to_pil(pair.image_b), folder / "sources" / job.task.modality_b / f"{job.stem}.png")
        save_png_atomic(to_pil(pair.ground_truth), folder / "truth" / f"{job.stem}.png")
    return pair.image_a[None], pair.image_b[None]


def label_pair(job: LabelJob, store: LabelStore, refiner: DecompositionNet | None, config: RefinerConfig,
               regions: bool = False) -> None:
    """Select (and refine) the label of one pair and record it (PNG first, then its CSV rows)."""
    image_a, image_b = load_sources(job, store)
    candidates = candidates_for(job, image_a, image_b, regions)
    images = {name: image for name, (_, image) in candidates.items()}
    selection = select(images, image_a, image_b, job.task)
    label, refined = images[selection.best], False
    before = after = selection.scores[selection.best]
    if refiner is not None:
        candidate = refine_image(label, image_a, image_b, refiner, config)
        before, after = score_refinement(label, candidate, image_a, image_b, job.task, selection)
        if after >= before:
            label, refined = candidate, True
    save_png_atomic(to_pil(label[0]), store.label_path(job))
    rows = []
    for name, (origin, _) in candidates.items():
        chosen = name == selection.best
        rows.append({
            "task": job.task.name, "dataset": job.dataset, "split": job.split, "stem": job.stem,
            "candidate": name, "origin": origin, "selected": int(chosen), "score": round(selection.scores[name], 6),
            **{metric: round(value, 6) for metric, value in selection.metrics[name].items()},
            "refined": int(refined) if chosen else "", "score_before": round(before, 6) if chosen else "",
            "score_after": round(after, 6) if chosen else "",
        })
    store.append(rows)


def score_refinement(
    label: torch.Tensor, refined: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, task: FusionTask,
    selection: Selection,
) -> tuple[float, float]:
    """The task's selection score of the label before and after refinement: (before, after).

    Both are normalised over the pair's other candidates (with the metrics stage 1 computed for them) plus
    the two labels, so the refined label is kept only if it does not lose ground among the candidates.
    """
    pool = {name: metrics for name, metrics in selection.metrics.items() if name != selection.best}
    pool |= candidate_metrics({"__before__": label, "__after__": refined}, image_a, image_b)
    scores = weighted_scores(pool, SELECTION_WEIGHTS[task.family])
    return scores["__before__"], scores["__after__"]


REFINER_TRAINING_PAIRS = 40
"""Source pairs (the run's first ones) the decomposition network is trained on."""


def prepare_refiner(jobs: list[LabelJob], store: LabelStore, config: RefinerConfig) -> DecompositionNet:
    """Load the run's decomposition network, or train it on the run's source pairs and save it."""
    path = store.out_dir / "refiner" / f"{jobs[0].task.family}.safetensors"
    if path.is_file():
        return load_decomposer(path)
    pairs = []
    for job in jobs[:REFINER_TRAINING_PAIRS]:
        image_a, image_b = load_sources(job)
        pairs.append((luminance(image_a), luminance(image_b)))
    net = train_decomposer(pairs, config)
    save_decomposer(net, path, config)
    return net


def build_labels(
    jobs: list[LabelJob], out_dir: Path, refine: bool = True, config: RefinerConfig | None = None,
    progress: bool = True, regions: bool = False,
) -> dict[str, int]:
    """Label every job not finished yet (with ``regions``, the region-level merge joins the candidates);
    returns counts of done and skipped pairs.

    Under ``accelerate launch`` the pairs are split between the processes (the main process trains the refiner
    first); the files and CSV rows are the same as one process writes.
    """
    config = config or RefinerConfig()
    state = process_state()
    several = state.num_processes > 1
    if state.is_main_process:
        store = LabelStore(out_dir)  # recovers what a killed run left, shards included
        todo = [job for job in jobs if job.key not in store.finished]
        if refine and todo:
            prepare_refiner(jobs, store, config)  # trains and saves it once
    state.wait_for_everyone()
    if several:
        store = LabelStore(out_dir, shard=state.process_index)
    todo = [job for job in jobs if job.key not in store.finished]
    refiner = prepare_refiner(jobs, store, config) if refine and todo else None
    with state.split_between_processes(todo) as mine:
        for job in tqdm(mine, desc="pseudo-labels", unit="pair", disable=not progress or not state.is_main_process):
            label_pair(job, store, refiner, config, regions)
    state.wait_for_everyone()
    if state.is_main_process:
        LabelStore(out_dir).merge_shards(order=[job.key for job in jobs])
    state.wait_for_everyone()
    return {"labelled": len(todo), "already_done": len(jobs) - len(todo)}
