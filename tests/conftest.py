"""Shared fixtures: real image pairs from ../shared/data and a small, fixed pipeline."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from fusionfm import FlowMatchFusionScheduler, FusionFMPipeline, build_unet, load_image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FUSIONFM_SHARED", REPO_ROOT.parent / "shared")).resolve()
DATA = SHARED / "data"

# One real test pair per task (task, dataset, stem): gray+colour IVF, gray+gray IVF stored as RGB,
# colour PET, gray CT stored as RGB, colour MEF and MFF pairs.
PAIRS = {
    "IVF": ("IVF", "RoadScene", "FLIR_06995"),
    "IVF-gray": ("IVF", "TNO", "07"),
    "MIF-PET": ("MIF", "Harvard_MRI_PET", "11"),
    "MIF-CT": ("MIF", "Harvard_MRI_CT", "11"),
    "MEF": ("MEF", "MEFB", "garage"),
    "MFF": ("MFF", "MFIFB", "lytro_01"),
}


def _manifest() -> dict[tuple[str, str, str], dict[str, str]]:
    manifest = DATA / "manifest.csv"
    if not manifest.is_file():
        raise RuntimeError(
            f"The shared data is missing ({manifest}). Tests read real images from ../shared/data; "
            "set FUSIONFM_SHARED to the folder holding data/ and golden/."
        )
    with manifest.open(newline="") as handle:
        return {(row["task"], row["dataset"], row["stem"]): row for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def real_pair():
    """Load a real pair by key of :data:`PAIRS`: returns (PIL image a, PIL image b)."""
    rows = _manifest()

    def load(key: str):
        row = rows[PAIRS[key]]
        return load_image(DATA / row["path_a"]), load_image(DATA / row["path_b"])

    return load


def make_pipeline(coupling: str = "mean", seed: int = 0) -> FusionFMPipeline:
    """A pipeline with the tiny U-Net, deterministically initialised, progress bars off."""
    torch.manual_seed(seed)
    unet = build_unet("tiny").eval()
    pipe = FusionFMPipeline(unet=unet, scheduler=FlowMatchFusionScheduler(coupling=coupling))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def tiny_pipe() -> FusionFMPipeline:
    return make_pipeline()
