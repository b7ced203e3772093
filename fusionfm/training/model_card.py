"""The model card written beside every pipeline that training saves, rendered with ``huggingface_hub.ModelCard``
from ``model_card_template.md`` (works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..atomic import write_text_atomic
from .logs import quality_markdown

TEMPLATE = Path(__file__).with_name("model_card_template.md")

CARD_DATA = dict(
    library_name="diffusers", pipeline_tag="image-to-image", license="apache-2.0",
    tags=["image-fusion", "flow-matching", "fusionfm", "infrared-visible", "medical-image-fusion",
          "multi-exposure-fusion", "multi-focus-fusion"],
    metrics=["Qabf", "SSIM", "VIF"],
)


HIDDEN_SETTINGS = ("hub_token", "no_progress", "output_dir")
"""Run settings left out of the card: secrets and local plumbing."""


def render_model_card(settings: dict[str, Any], steps: int, quality: list[list[float]], stage_names: list[str],
                      load_from: str) -> ModelCard:
    """The card of a trained pipeline: Hub metadata, usage (loading ``load_from``), the recipe and the quality
    matrix R[i][j] (``quality``, one row per entry of ``stage_names``).

    ``settings`` are the training script's arguments (``tasks``, ``joint``, ``train_batch_size``, ``eval_pairs``
    and ``eval_resolution`` are read; every setting but :data:`HIDDEN_SETTINGS` is one row of the recipe table).
    """
    tasks = settings["tasks"]
    return ModelCard.from_template(
        ModelCardData(**CARD_DATA), template_path=str(TEMPLATE),
        tasks=tasks, mode="jointly" if settings["joint"] else "in sequence (" + " → ".join(tasks) + ")",
        steps=steps, batch_size=settings["train_batch_size"], load_from=load_from,
        settings={key: value for key, value in settings.items() if key not in HIDDEN_SETTINGS},
        eval_pairs=settings["eval_pairs"], eval_resolution=settings["eval_resolution"],
        quality_table=quality_markdown(quality, stage_names, tasks),
    )


def write_model_card(folder: Path, card: ModelCard) -> Path:
    """``model_card.md`` in a saved pipeline folder (atomically)."""
    return write_text_atomic(Path(folder) / "model_card.md", str(card))
