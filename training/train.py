#!/usr/bin/env python
"""Train FusionFM: flow matching over the fusion tasks, one after another, with EWC and experience replay.

    accelerate launch training/train.py --data_root ../shared/data \\
        --labels IVF=labels/IVF MIF=labels/MIF MEF=labels/MEF MFF=labels/MFF \\
        --tasks IVF MIF MEF MFF --steps_per_task 1000 --ewc_lambda 1000 --replay_per_task 64 \\
        --output_dir runs/fusionfm

Also runs as ``python training/train.py ...`` (one process) and as
``accelerate launch --multi_gpu --num_processes 2 ...``: two gloo processes on a CPU machine, NCCL on GPUs.

Each step draws a batch of random crops of the current task's pairs (per process), mixes in a share of
replayed samples of earlier tasks, and minimises the flow-matching loss ``|v_theta(x_t, t, a, b, task) -
(x1 - x0)|^2`` plus the EWC penalty. After every task: the Fisher of that task is folded into EWC, a
quota of its samples enters the replay buffer, every task's test quality is measured (one row of the
matrix R), and the pipeline is saved. ``--joint`` trains on all tasks at once for the same total steps
(the upper-bound baseline).

Checkpoints (``output_dir/checkpoint-<step>``) hold safetensors and JSON only, no pickle. They are
written to a hidden folder that is renamed into place once complete, and ``state.json`` (written last)
lists every file with its size; resume takes the newest complete one. Randomness is derived from
(seed, process, step), so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from diffusers.optimization import get_scheduler
from huggingface_hub import ModelCardData
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fusionfm import FlowMatchFusionScheduler, FusionFMPipeline, build_unet, get_task
from fusionfm.continual import ElasticWeightConsolidation, ReplayBuffer, accuracy_and_backward_transfer, diagonal_fisher
from fusionfm.datasets import LabelledPairs
from fusionfm.evaluate import evaluation_pairs, task_quality
from fusionfm.hub import push_folder_to_hub
from fusionfm.scheduler import COUPLINGS, TIME_SAMPLINGS

logger = logging.getLogger("fusionfm.train")
LOG_COLUMNS = ["step", "task", "loss", "flow_loss", "ewc_penalty", "lr", "replayed"]
CHECKPOINT_PREFIX = "checkpoint-"


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_root", type=Path, default=None,
                      help="shared/data folder: real sources of the labels and the test pairs for evaluation.")
    data.add_argument("--labels", nargs="+", required=True, metavar="TASK=DIR",
                      help="pseudo-label folder per task (written by python -m fusionfm.pseudolabel).")
    data.add_argument("--tasks", nargs="+", default=None,
                      help="task order (default: the --labels order). Families: IVF MIF MEF MFF.")
    data.add_argument("--resolution", type=int, default=128, help="side of the square training crops")
    data.add_argument("--no_flip", action="store_true", help="no random left-right flips")

    model = parser.add_argument_group("model")
    model.add_argument("--unet_preset", default="default", help="tiny, default or large")
    model.add_argument("--unet_config", type=Path, default=None, help="JSON file of FusionUNet config overrides")
    model.add_argument("--coupling", choices=COUPLINGS, default="mean")
    model.add_argument("--time_sampling", choices=TIME_SAMPLINGS, default="uniform")
    model.add_argument("--start_share", type=float, default=0.0,
                       help="share of each batch trained at t = 0, the point one-step inference uses")
    model.add_argument("--gradient_loss_weight", type=float, default=0.0,
                       help="weight of the image-gradient term of the loss (0: plain flow matching)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=8, help="per process")
    optim.add_argument("--steps_per_task", type=int, default=1000)
    optim.add_argument("--joint", action="store_true",
                       help="train on all tasks at once (same total steps; no EWC or replay)")
    optim.add_argument("--learning_rate", type=float, default=1e-3)
    optim.add_argument("--lr_scheduler", default="cosine",
                       choices=["constant", "constant_with_warmup", "linear", "cosine"])
    optim.add_argument("--lr_warmup_steps", type=int, default=100)
    optim.add_argument("--adam_weight_decay", type=float, default=1e-4)
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="bf16")
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")

    continual = parser.add_argument_group("continual learning")
    continual.add_argument("--ewc_lambda", type=float, default=0.0, help="EWC strength (0: off)")
    continual.add_argument("--ewc_fisher_batches", type=int, default=4, help="batches per process for the Fisher")
    continual.add_argument("--ewc_decay", type=float, default=1.0, help="online EWC: weight of the old Fisher")
    continual.add_argument("--replay_per_task", type=int, default=0, help="samples kept per finished task (0: off)")
    continual.add_argument("--replay_share", type=float, default=0.25, help="share of each batch replayed")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_pairs", type=int, default=8, help="test pairs per task for R[i][j] (0: skip)")
    evaluation.add_argument("--eval_resolution", type=int, default=256, help="long side of the test pairs")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", type=Path, required=True)
    output.add_argument("--checkpointing_steps", type=int, default=500)
    output.add_argument("--checkpoints_total_limit", type=int, default=None)
    output.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    output.add_argument("--logging_steps", type=int, default=10)
    output.add_argument("--report_to", choices=["csv", "tensorboard"], default="csv",
                        help="CSV is always written; tensorboard in addition when it is installed")
    output.add_argument("--no_save_each_task", action="store_true", help="save the pipeline only at the end")
    output.add_argument("--push_to_hub", action="store_true")
    output.add_argument("--hub_model_id", default=None)
    output.add_argument("--hub_token", default=None)
    output.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        args.labels = _label_folders(args.labels)
        args.tasks = [get_task(task).family for task in (args.tasks or list(args.labels))]
    except ValueError as error:
        parser.error(str(error))
    missing = [task for task in args.tasks if task not in args.labels]
    if missing:
        parser.error(f"no --labels folder for {', '.join(missing)}; give TASK=DIR for every task in --tasks.")
    if len(set(args.tasks)) != len(args.tasks):
        parser.error(f"--tasks lists a task twice: {args.tasks}.")
    for name in ("resolution", "train_batch_size", "steps_per_task", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1.")
    if not 0 <= args.replay_share < 1:
        parser.error("--replay_share must be in [0, 1).")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id.")
    if args.eval_pairs and args.data_root is None:
        parser.error("evaluation needs --data_root (or pass --eval_pairs 0).")
    return args


def _label_folders(items: list[str]) -> dict[str, Path]:
    folders = {}
    for item in items:
        task, separator, folder = item.partition("=")
        if not separator or not folder:
            raise ValueError(f"--labels takes TASK=DIR items, got {item!r}.")
        family = get_task(task).family
        if family in folders:
            raise ValueError(f"--labels names {family} twice.")
        folders[family] = Path(folder)
    return folders


# ---------------------------------------------------------------------------------------------- state
@dataclass
class TrainingState:
    """What a checkpoint restores besides tensors: position in the schedule and results so far."""

    step: int = 0
    quality: list[list[float]] = field(default_factory=list)  # R[i][j], one row per finished stage
    stage_names: list[str] = field(default_factory=list)


def step_generator(seed: int, process: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, process, step, stream): resumed runs draw what they would have."""
    mixed = ((seed * 1_000_003 + process) * 1_000_000_007 + step) * 31 + stream
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


# ---------------------------------------------------------------------------------------------- batches
class BatchSampler:
    """Random crops of the current task, plus replayed samples of earlier tasks, with flow inputs."""

    def __init__(self, datasets: dict[str, LabelledPairs], replay: ReplayBuffer, noise_scheduler,
                 args: argparse.Namespace) -> None:
        self.datasets, self.replay, self.noise_scheduler, self.args = datasets, replay, noise_scheduler, args

    def draw(self, tasks: list[str], batch_size: int, generator: torch.Generator,
             replay_share: float = 0.0) -> tuple[dict[str, torch.Tensor], int]:
        """A batch whose fresh samples come from ``tasks`` (uniformly); returns it and the replayed count."""
        fresh, replayed = self.replay.split_batch(batch_size, replay_share)
        picks = []
        for _ in range(fresh):
            task = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
            picks.append((task, int(torch.randint(len(self.datasets[task]), (1,), generator=generator))))
        picks += self.replay.sample(replayed, generator)
        crops = [self.datasets[task].random_crop(index, self.args.resolution, generator, not self.args.no_flip)
                 for task, index in picks]
        batch = {key: torch.stack([crop[key] for crop in crops]) for key in ("image_a", "image_b", "target")}
        batch["task_id"] = torch.tensor([crop["task_id"] for crop in crops], dtype=torch.long)
        batch["x0"] = self.noise_scheduler.source_point(batch["image_a"], batch["image_b"], generator)
        batch["t"] = self.noise_scheduler.sample_time(batch_size, generator)
        return batch, replayed


def flow_matching_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       gradient_weight: float = 0.0) -> torch.Tensor:
    """Per-sample loss (B,): mean squared error between v_theta(x_t) and the straight-flow velocity, plus
    ``gradient_weight`` times the mean squared error of their horizontal and vertical differences.

    The gradient term is an edge loss on the predicted image, since v - v* = (x1_hat - x1) / (1 - t).
    Plain MSE lets a model soften the strongest source edges at little cost, which edge metrics such as
    Qabf punish.
    """
    x0, x1 = batch["x0"], batch["target"]
    x_t = FlowMatchFusionScheduler.interpolate(x0, x1, batch["t"])
    prediction = model(x_t, batch["image_a"], batch["image_b"], batch["t"], batch["task_id"])
    error = prediction.float() - FlowMatchFusionScheduler.velocity_target(x0, x1)
    loss = (error**2).mean(dim=(1, 2, 3))
    if gradient_weight > 0:
        horizontal = error[..., :, 1:] - error[..., :, :-1]
        vertical = error[..., 1:, :] - error[..., :-1, :]
        loss = loss + gradient_weight * ((horizontal**2).mean(dim=(1, 2, 3)) + (vertical**2).mean(dim=(1, 2, 3)))
    return loss


# ---------------------------------------------------------------------------------------------- checkpoints
def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(folder: Path, model, optimizer, lr_scheduler, ewc: ElasticWeightConsolidation,
                    replay: ReplayBuffer, state: TrainingState, args: argparse.Namespace) -> None:
    """Write a checkpoint atomically: a hidden folder, renamed to ``folder`` once ``state.json`` is in."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, partial / "model.safetensors")
    optimizer_state = optimizer.state_dict()
    save_file({f"{index}.{key}": value for index, values in optimizer_state["state"].items()
               for key, value in values.items()}, partial / "optimizer.safetensors")
    save_file(ewc.state_dict(), partial / "ewc.safetensors")
    files = {name: (partial / name).stat().st_size
             for name in ("model.safetensors", "optimizer.safetensors", "ewc.safetensors")}
    for name in files:
        _fsync_file(partial / name)
    meta = {
        "training_state": asdict(state),
        "optimizer_param_groups": optimizer_state["param_groups"],
        "lr_scheduler": lr_scheduler.state_dict(),
        "replay": replay.state_dict(),
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                 if key != "labels"} | {"labels": {k: str(v) for k, v in args.labels.items()}},
        "files": files,
    }
    (partial / "state.json").write_text(json.dumps(meta, indent=1))
    _fsync_file(partial / "state.json")
    if folder.exists():  # the same step saved again (e.g. after a resume): replace it
        stale = folder.with_name(f".{folder.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        folder.rename(stale)
        shutil.rmtree(stale)
    partial.rename(folder)


def checkpoint_is_complete(folder: Path) -> bool:
    """True when ``state.json`` parses and every file it lists exists with the recorded size."""
    try:
        meta = json.loads((folder / "state.json").read_text())
        return all((folder / name).stat().st_size == size for name, size in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete ones are skipped with a warning)."""
    found = []
    for folder in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = folder.name[len(CHECKPOINT_PREFIX):]
        if not (folder.is_dir() and suffix.isdigit()):
            continue
        if checkpoint_is_complete(folder):
            found.append((int(suffix), folder))
        else:
            logger.warning("%s is incomplete (interrupted while writing?); ignoring it.", folder)
    return [folder for _, folder in sorted(found)]


def prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    for folder in list_checkpoints(output_dir)[: max(len(list_checkpoints(output_dir)) - limit, 0)]:
        shutil.rmtree(folder)


def load_checkpoint(folder: Path, model, optimizer, lr_scheduler, ewc: ElasticWeightConsolidation,
                    replay: ReplayBuffer) -> TrainingState:
    """Restore everything :func:`save_checkpoint` wrote; returns the training state."""
    if not checkpoint_is_complete(folder):
        raise ValueError(f"{folder} is not a complete checkpoint (no valid state.json, or files missing).")
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(folder / "model.safetensors"))
    flat = load_file(folder / "optimizer.safetensors")
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer_param_groups"]})
    lr_scheduler.load_state_dict(meta["lr_scheduler"])
    ewc.load_state_dict(load_file(folder / "ewc.safetensors"))
    replay.load_state_dict(meta["replay"])
    return TrainingState(**meta["training_state"])


def resolve_resume(output_dir: Path, requested: str) -> Path | None:
    if requested != "latest":
        folder = Path(requested)
        if not checkpoint_is_complete(folder):
            raise SystemExit(f"error: --resume_from_checkpoint {folder} is not a complete checkpoint.")
        return folder
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


# ---------------------------------------------------------------------------------------------- outputs
class CsvLog:
    """``logs/train_log.csv``; on resume, rows after the resumed step are dropped (atomically)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.is_file():
            with path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if row.get("step", "").isdigit()
                        and int(row["step"]) <= resume_step]
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow(row)


def write_quality_csv(path: Path, state: TrainingState, tasks: list[str]) -> tuple[float, float | None]:
    """R[i][j] with ACC and BWT (BWT only for a full sequential matrix); returns (ACC, BWT)."""
    square = len(state.quality) == len(tasks)
    if square:
        accuracy, backward = accuracy_and_backward_transfer(state.quality)
    else:
        accuracy, backward = sum(state.quality[-1]) / len(tasks), None
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["after", *tasks])
        for name, row in zip(state.stage_names, state.quality, strict=True):
            writer.writerow([name, *(f"{value:.4f}" for value in row)])
        writer.writerow(["ACC", f"{accuracy:.4f}"])
        writer.writerow(["BWT", "" if backward is None else f"{backward:.4f}"])
    os.replace(temporary, path)
    return accuracy, backward


def quality_markdown(state: TrainingState, tasks: list[str]) -> str:
    if not state.quality:
        return "Not evaluated (`--eval_pairs 0`)."
    lines = ["| after | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{value:.3f}" for value in row) + " |"
              for name, row in zip(state.stage_names, state.quality, strict=True)]
    if len(state.quality) == len(tasks):
        accuracy, backward = accuracy_and_backward_transfer(state.quality)
        lines.append(f"\nACC = {accuracy:.3f}, BWT = {backward:+.3f}.")
    return "\n".join(lines)


def write_model_card(folder: Path, args: argparse.Namespace, state: TrainingState, num_processes: int,
                     load_from: str) -> Path:
    """``model_card.md`` in a saved pipeline folder: Hub metadata, usage (loading ``load_from``), the recipe
    and R[i][j]."""
    data = ModelCardData(
        library_name="diffusers", pipeline_tag="image-to-image", license="apache-2.0",
        tags=["image-fusion", "flow-matching", "fusionfm", "infrared-visible", "medical-image-fusion",
              "multi-exposure-fusion", "multi-focus-fusion"],
        metrics=["Qabf", "SSIM", "VIF"],
    )
    settings = {key: value for key, value in vars(args).items()
                if key not in ("hub_token", "labels", "no_progress", "output_dir")}
    settings["labels"] = {task: str(folder_) for task, folder_ in args.labels.items()}
    settings["num_processes"] = num_processes
    config_rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in settings.items())
    mode = "jointly" if args.joint else "in sequence (" + " → ".join(args.tasks) + ")"
    content = f"""---
{data.to_yaml()}
---

# FusionFM checkpoint ({', '.join(args.tasks)})

One-step flow-matching image fusion, trained {mode} with `training/train.py`,
{state.step} steps of batch {args.train_batch_size} per process.

## Usage

```python
from fusionfm import FusionFMPipeline
from fusionfm.image_processor import load_image

pipe = FusionFMPipeline.from_pretrained("{load_from}")
fused = pipe(load_image("ir.png"), load_image("vis.png"), task="IVF").images[0]
fused.save("fused.png")
```

## Training configuration

| setting | value |
|---|---|
{config_rows}

## Evaluation

Quality on each task's test pairs after each stage: the mean of Qabf, SSIM and VIF of the fused image,
each divided by that of the plain average of the pair (1.0 = as good as averaging);
{args.eval_pairs} pairs per task at {args.eval_resolution} px (long side).

{quality_markdown(state, args.tasks)}

## Limitations

Trained on pseudo-labels (selected and refined outputs of classical fusion methods), not on ground truth;
the model can only be as good as those labels allow. Inputs must be registered.
"""
    path = folder / "model_card.md"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content)
    os.replace(temporary, path)
    return path


def save_pipeline(folder: Path, model, noise_scheduler, args, state, num_processes: int,
                  load_from: str | None = None) -> None:
    """``save_pretrained`` (safetensors) into a hidden folder renamed into place, plus the model card."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    FusionFMPipeline(unet=model, scheduler=noise_scheduler).save_pretrained(partial, safe_serialization=True)
    write_model_card(partial, args, state, num_processes, load_from or str(folder))
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)


def save_final_pipeline(output_dir: Path, model, noise_scheduler, args, state, num_processes: int) -> None:
    """The final pipeline lives in ``output_dir`` itself (beside checkpoints and logs), as in diffusers."""
    staging = output_dir / "final"
    save_pipeline(staging, model, noise_scheduler, args, state, num_processes,
                  load_from=args.hub_model_id if args.push_to_hub else str(output_dir))
    for item in staging.iterdir():
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


# ---------------------------------------------------------------------------------------------- training
def evaluate_stage(model, noise_scheduler, eval_sets: dict[str, list], tasks: list[str]) -> list[float]:
    pipeline = FusionFMPipeline(unet=model, scheduler=noise_scheduler)
    pipeline.set_progress_bar_config(disable=True)
    model.eval()
    row = []
    for task in tasks:
        row.append(task_quality(pipeline, eval_sets[task], compute_dtype="fp32"))
    model.train()
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator(
        cpu=args.cpu or not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        log_with="tensorboard" if args.report_to == "tensorboard" and _tensorboard_installed() else None,
        project_dir=str(args.output_dir / "logs"),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.report_to == "tensorboard" and not _tensorboard_installed() and accelerator.is_main_process:
        logger.warning("tensorboard is not installed; logging to CSV only (pip install tensorboard).")
    set_seed(args.seed)
    rank, main_process = accelerator.process_index, accelerator.is_main_process
    if main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)

    try:
        datasets = {task: LabelledPairs(args.labels[task], args.data_root, task) for task in args.tasks}
        eval_sets = ({task: evaluation_pairs(args.data_root, task, args.eval_pairs, args.eval_resolution)
                      for task in args.tasks} if args.eval_pairs else {})
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if main_process:
        logger.info("Training pairs: %s", ", ".join(f"{t} {len(d)}" for t, d in datasets.items()))

    overrides = json.loads(args.unet_config.read_text()) if args.unet_config else {}
    model = build_unet(args.unet_preset, **overrides)
    noise_scheduler = FlowMatchFusionScheduler(coupling=args.coupling, time_sampling=args.time_sampling,
                                               start_share=args.start_share)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    stages = 1 if args.joint else len(args.tasks)
    total_steps = args.steps_per_task * len(args.tasks)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps,
                                 num_training_steps=total_steps)
    # The LR schedule is stepped by hand once per optimisation step (not through accelerate, which
    # would step it once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ewc = ElasticWeightConsolidation(0.0 if args.joint else args.ewc_lambda, args.ewc_decay)
    replay = ReplayBuffer(0 if args.joint else args.replay_per_task)
    state = TrainingState()
    resumed_from = None

    if args.resume_from_checkpoint:
        folder = resolve_resume(args.output_dir, args.resume_from_checkpoint)
        if folder is None:
            logger.info("No checkpoint in %s yet; starting from scratch.", args.output_dir)
        else:
            state = load_checkpoint(folder, unwrapped, optimizer, lr_scheduler, ewc, replay)
            resumed_from = {"checkpoint": folder.name, "step": state.step}
            logger.info("Resumed from %s at step %d.", folder, state.step)
    log = CsvLog(args.output_dir / "logs" / "train_log.csv", state.step) if main_process else None
    if accelerator.log_with:
        accelerator.init_trackers("fusionfm", config={k: str(v) for k, v in vars(args).items()})

    sampler = BatchSampler(datasets, replay, noise_scheduler, args)
    steps_per_stage = total_steps // stages
    progress = tqdm(range(total_steps), initial=state.step, desc="Training",
                    disable=args.no_progress or not main_process)
    first_step_losses = None
    started = time.perf_counter()
    model.train()
    while state.step < total_steps:
        stage = state.step // steps_per_stage
        tasks = list(args.tasks) if args.joint else [args.tasks[stage]]
        generator = step_generator(args.seed, rank, state.step)
        share = 0.0 if args.joint else args.replay_share
        batch, replayed = sampler.draw(tasks, args.train_batch_size, generator, share)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            flow_loss = flow_matching_loss(model, batch, args.gradient_loss_weight).mean()
        penalty = ewc.penalty(unwrapped)
        loss = flow_loss + penalty
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        progress.update(1)

        losses = accelerator.gather(flow_loss.detach().float().reshape(1))
        if first_step_losses is None:
            first_step_losses = losses.tolist()
        if main_process and (state.step % args.logging_steps == 0 or state.step == total_steps):
            row = {"step": state.step, "task": "+".join(tasks), "loss": f"{float(loss.detach()):.6f}",
                   "flow_loss": f"{float(losses.mean()):.6f}", "ewc_penalty": f"{float(penalty.detach()):.6g}",
                   "lr": f"{lr_scheduler.get_last_lr()[0]:.6g}", "replayed": replayed}
            log.write(row)
            if accelerator.log_with:
                accelerator.log({k: float(v) for k, v in row.items() if k not in ("task", "step")}, step=state.step)
        progress.set_postfix(loss=f"{float(losses.mean()):.4f}", task="+".join(tasks))

        if state.step % steps_per_stage == 0:
            finish_stage(args, stage, accelerator, unwrapped, noise_scheduler, sampler, ewc, replay, state,
                         eval_sets, datasets)
        if state.step % args.checkpointing_steps == 0 or state.step == total_steps:
            if main_process:
                save_checkpoint(args.output_dir / f"{CHECKPOINT_PREFIX}{state.step}", unwrapped, optimizer,
                                lr_scheduler, ewc, replay, state, args)
                prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
            accelerator.wait_for_everyone()
    progress.close()

    fingerprints = gather_object([weights_fingerprint(unwrapped)])
    if main_process:
        save_final_pipeline(args.output_dir, unwrapped, noise_scheduler, args, state, accelerator.num_processes)
        summary = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "steps": state.step,
            "resumed_from": resumed_from,
            "weights_sha256_per_process": fingerprints,
            "first_step_loss_per_process": first_step_losses,
            "seconds_this_run": round(time.perf_counter() - started, 1),
        }
        if state.quality:
            accuracy, backward = write_quality_csv(args.output_dir / "continual.csv", state, args.tasks)
            summary |= {"ACC": accuracy, "BWT": backward}
            print(quality_markdown(state, args.tasks))
        (args.output_dir / "training_summary.json").write_text(json.dumps(summary, indent=1))
        if args.push_to_hub:
            url = push_folder_to_hub(args.output_dir, args.hub_model_id, args.output_dir / "model_card.md",
                                     token=args.hub_token)
            logger.info("Pushed to %s", url)
    accelerator.wait_for_everyone()  # leave together: a process group torn down by one side alone can hang
    # Drop the DDP wrapper while the process group is still registered. Otherwise the group dies with the
    # wrapper's reducer at exit, in a destructor that holds the GIL and waits for gloo's worker thread, which
    # may itself need the GIL to free the last collective's tensors: a rare hang at exit (seen in CI-like runs).
    del model
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    return 0


def finish_stage(args, stage: int, accelerator: Accelerator, unwrapped, noise_scheduler, sampler: BatchSampler,
                 ewc: ElasticWeightConsolidation, replay: ReplayBuffer, state: TrainingState,
                 eval_sets: dict, datasets: dict[str, LabelledPairs]) -> None:
    """End of a task (or of joint training): Fisher, replay quota, R row, pipeline save."""
    name = "joint" if args.joint else args.tasks[stage]
    if not args.joint and ewc.strength > 0:
        batches = [sampler.draw([name], args.train_batch_size,
                                step_generator(args.seed, accelerator.process_index, stage, stream=1))[0]
                   for _ in range(args.ewc_fisher_batches)]
        fisher = diagonal_fisher(unwrapped, functools.partial(flow_matching_loss,
                                                              gradient_weight=args.gradient_loss_weight), batches)
        fisher = {key: accelerator.reduce(value.to(accelerator.device), "mean").cpu() for key, value in fisher.items()}
        ewc.consolidate(unwrapped, fisher)
    if not args.joint and replay.size_per_task:
        # The same draw on every process: the buffers stay identical.
        replay.add_task(name, len(datasets[name]), step_generator(args.seed, 0, stage, stream=2))
    if accelerator.is_main_process:
        if eval_sets:
            state.quality.append(evaluate_stage(unwrapped, noise_scheduler, eval_sets, args.tasks))
            state.stage_names.append(name)
            logger.info("After %s: quality %s", name, ", ".join(
                f"{task} {value:.3f}" for task, value in zip(args.tasks, state.quality[-1], strict=True)))
        if not args.no_save_each_task and not args.joint:
            save_pipeline(args.output_dir / f"after-{stage + 1}-{name}", unwrapped, noise_scheduler, args, state,
                          accelerator.num_processes)
    accelerator.wait_for_everyone()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal across processes when DDP kept them in sync."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensorboard_installed() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
