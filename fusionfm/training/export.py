"""Saving trained pipelines: ``save_pretrained`` (safetensors) plus the model card, staged and renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huggingface_hub import ModelCard

from ..atomic import staged_folder
from ..pipeline_fusionfm import FusionFMPipeline
from .model_card import write_model_card


def save_pipeline(folder: Path, pipeline: FusionFMPipeline, card: ModelCard) -> None:
    """The pipeline and its ``model_card.md`` in ``folder`` (replaced atomically if it exists)."""
    with staged_folder(folder) as partial:
        pipeline.save_pretrained(partial, safe_serialization=True)
        write_model_card(partial, card)


def save_final_pipeline(output_dir: Path, pipeline: FusionFMPipeline, card: ModelCard) -> None:
    """The final pipeline lives in ``output_dir`` itself (beside checkpoints and logs), as in diffusers."""
    staging = output_dir / "final"
    save_pipeline(staging, pipeline, card)
    for item in staging.iterdir():
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
