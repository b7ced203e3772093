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


def render_model_card(tasks: list[str], joint: bool, steps: int, batch_size: int, settings: dict[str, Any],
                      quality: list[list[float]], stage_names: list[str], eval_pairs: int, eval_resolution: int,
                      load_from: str) -> ModelCard:
    """The card of a trained pipeline: Hub metadata, usage (loading ``load_from``), the recipe (``settings``,
    one table row each) and the quality matrix R[i][j] (``quality``, one row per entry of ``stage_names``)."""
    return ModelCard.from_template(
        ModelCardData(**CARD_DATA), template_path=str(TEMPLATE),
        tasks=tasks, mode="jointly" if joint else "in sequence (" + " → ".join(tasks) + ")", steps=steps,
        batch_size=batch_size, load_from=load_from, settings=settings, eval_pairs=eval_pairs,
        eval_resolution=eval_resolution, quality_table=quality_markdown(quality, stage_names, tasks),
    )


def write_model_card(folder: Path, card: ModelCard) -> Path:
    """``model_card.md`` in a saved pipeline folder (atomically)."""
    return write_text_atomic(Path(folder) / "model_card.md", str(card))
