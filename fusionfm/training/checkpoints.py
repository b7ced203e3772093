"""Pickle-free, atomic, resumable training checkpoints (safetensors + JSON).

A checkpoint ``<output_dir>/checkpoint-<step>/`` holds ``model.safetensors``, ``optimizer.safetensors``,
``ewc.safetensors`` and ``state.json`` (training state, optimiser hyper-parameters, LR schedule, replay
buffer, the run's arguments and every file's size and SHA-256). It is written to a hidden folder renamed into
place once ``state.json`` (written last) is in, so a killed run never leaves a checkpoint that looks complete;
a checkpoint is complete only if every file matches its recorded hash (checkpoints of older runs record sizes
only, and are checked by size). Pruning renames a checkpoint to a hidden folder before deleting it, and the next
prune removes what a killed prune left. Unlike accelerate's ``save_state`` nothing is pickled, so loading a
checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import fsync_file, staged_folder
from .continual import ElasticWeightConsolidation, ReplayBuffer

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class TrainingState:
    """What a checkpoint restores besides tensors: position in the schedule and results so far."""

    step: int = 0
    quality: list[list[float]] = field(default_factory=list)  # R[i][j], one row per finished stage
    stage_names: list[str] = field(default_factory=list)
    seconds: float = 0.0  # training wall time so far, summed over resumed runs


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler,
                    ewc: ElasticWeightConsolidation, replay: ReplayBuffer, state: TrainingState,
                    run_config: dict[str, Any]) -> None:
    """Write a checkpoint atomically; ``run_config`` (JSON-serialisable, e.g. the arguments) is kept for reference."""
    with staged_folder(folder) as partial:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, partial / "model.safetensors")
        optimizer_state = optimizer.state_dict()
        save_file({f"{index}.{key}": value for index, values in optimizer_state["state"].items()
                   for key, value in values.items()}, partial / "optimizer.safetensors")
        save_file(ewc.state_dict(), partial / "ewc.safetensors")
        files = {name: {"size": (partial / name).stat().st_size, "sha256": file_sha256(partial / name)}
                 for name in ("model.safetensors", "optimizer.safetensors", "ewc.safetensors")}
        for name in files:
            fsync_file(partial / name)
        meta = {
            "training_state": asdict(state),
            "optimizer_param_groups": optimizer_state["param_groups"],
            "lr_scheduler": lr_scheduler.state_dict(),
            "replay": replay.state_dict(),
            "args": run_config,
            "files": files,
        }
        (partial / "state.json").write_text(json.dumps(meta, indent=1))
        fsync_file(partial / "state.json")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_matches(path: Path, record: int | dict[str, Any]) -> bool:
    """``record``: {"size", "sha256"}, or a bare size for checkpoints written before hashes were recorded."""
    if isinstance(record, int):
        return path.stat().st_size == record
    return path.stat().st_size == record["size"] and file_sha256(path) == record["sha256"]


def checkpoint_is_complete(folder: Path) -> bool:
    """True when ``state.json`` parses and every file it lists exists with the recorded size and hash."""
    try:
        meta = json.loads((folder / "state.json").read_text())
        return all(_file_matches(folder / name, record) for name, record in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _numbered_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for folder in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = folder.name[len(CHECKPOINT_PREFIX):]
        if folder.is_dir() and suffix.isdigit():
            found.append((int(suffix), folder))
    return sorted(found)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete ones are skipped with a warning)."""
    complete = []
    for _, folder in _numbered_checkpoints(output_dir):
        if checkpoint_is_complete(folder):
            complete.append(folder)
        else:
            logger.warning("%s is incomplete or damaged (interrupted while written or pruned?); ignoring it.",
                           folder)
    return complete


def prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    """Delete the oldest complete checkpoints beyond ``limit`` (None: keep all), and what an interrupted prune
    left: hidden ``.pruning`` folders, and incomplete checkpoints older than the newest complete one (a
    checkpoint being written is never among them: writes go to a hidden folder first)."""
    for leftover in output_dir.glob(f".{CHECKPOINT_PREFIX}*.pruning"):
        shutil.rmtree(leftover, ignore_errors=True)
    if limit is None:
        return
    checkpoints = list_checkpoints(output_dir)
    if checkpoints:
        newest = int(checkpoints[-1].name[len(CHECKPOINT_PREFIX):])
        doomed = [folder for step, folder in _numbered_checkpoints(output_dir)
                  if step < newest and folder not in checkpoints]
        doomed += checkpoints[: max(len(checkpoints) - limit, 0)]
        for folder in doomed:
            hidden = folder.with_name(f".{folder.name}.pruning")
            folder.rename(hidden)  # atomic: the checkpoint is gone whole or not at all
            shutil.rmtree(hidden)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler,
                    ewc: ElasticWeightConsolidation, replay: ReplayBuffer) -> TrainingState:
    """Restore everything :func:`save_checkpoint` wrote; returns the training state."""
    if not checkpoint_is_complete(folder):
        raise ValueError(f"{folder} is not a complete checkpoint (no valid state.json, or files missing or "
                         "changed since they were written).")
    meta = json.loads((folder / "state.json").read_text())

    def read(name: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(folder / name)
        except Exception as error:  # safetensors raises its own types for bad headers
            raise ValueError(f"Could not read {folder / name}: {error}") from error

    try:
        model.load_state_dict(read("model.safetensors"))
    except RuntimeError as error:  # missing or unexpected keys, shape mismatches
        raise ValueError(f"{folder / 'model.safetensors'} does not fit this model (was the run started with "
                         f"other model arguments?): {error}") from error
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in read("optimizer.safetensors").items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer_param_groups"]})
    lr_scheduler.load_state_dict(meta["lr_scheduler"])
    ewc.load_state_dict(read("ewc.safetensors"))
    replay.load_state_dict(meta["replay"])
    return TrainingState(**meta["training_state"])


def resolve_resume(output_dir: Path, requested: str) -> Path | None:
    """The checkpoint to resume from: ``requested`` itself, or for ``"latest"`` the newest complete one (None
    if there is none yet).

    Raises:
        ValueError: ``requested`` names a folder that is not a complete checkpoint.
    """
    if requested != "latest":
        folder = Path(requested)
        if not checkpoint_is_complete(folder):
            raise ValueError(f"--resume_from_checkpoint {folder} is not a complete checkpoint.")
        return folder
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes in row-major order: equal across processes when DDP kept them in sync, and
    the same for weights in channels-last layout (as ``from_pretrained`` gives them on a CPU)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        digest.update(name.encode())
        # reshape(-1): a tensor with unit dimensions can count as contiguous with strides a byte view rejects.
        digest.update(parameter.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
