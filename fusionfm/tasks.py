"""The task registry: the one place that knows the fusion tasks.

Every task names its two inputs (modality folder names as in the data layout, and display
labels), how colour is put back after fusing luminance (see docs/design.md, "Colour"), and the
class id that the U-Net receives as its task embedding. MIF variants share the MIF class id:
the network learns one medical task, the variants differ only in labels and colour source.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ColorPolicy(str, Enum):
    """How the fused luminance gets its chroma back."""

    CHROMA_FROM_B = "chroma_from_b"
    """Cb/Cr of input b (visible image for IVF, PET/SPECT for MIF); gray if b is gray."""

    SATURATION_WEIGHTED = "saturation_weighted"
    """Cb/Cr of both inputs, weighted per pixel by their distance from neutral (MEF, MFF)."""


@dataclass(frozen=True)
class FusionTask:
    """One fusion task: its inputs, colour policy and U-Net class id."""

    name: str
    family: str
    class_id: int
    modality_a: str
    modality_b: str
    label_a: str
    label_b: str
    color_policy: ColorPolicy
    description: str
    black_is_empty: bool = False
    """Black in a source is no signal (a scan's background, a CT's air), so the fusion takes the other source there
    (:func:`fusionfm.finishing.favour_the_lit_source`)."""


NUM_TASK_CLASSES = 4
"""Number of task classes the U-Net embeds: IVF, MIF, MEF, MFF."""

TASKS: dict[str, FusionTask] = {
    task.name: task
    for task in (
        FusionTask("IVF", "IVF", 0, "ir", "vi", "Infrared", "Visible", ColorPolicy.CHROMA_FROM_B,
                   "infrared + visible"),
        FusionTask("MIF", "MIF", 1, "mri", "functional", "MRI", "CT / PET / SPECT",
                   ColorPolicy.CHROMA_FROM_B, "MRI + CT, PET or SPECT", black_is_empty=True),
        FusionTask("MIF-CT", "MIF", 1, "mri", "ct", "MRI", "CT", ColorPolicy.CHROMA_FROM_B, "MRI + CT",
                   black_is_empty=True),
        FusionTask("MIF-PET", "MIF", 1, "mri", "pet", "MRI", "PET", ColorPolicy.CHROMA_FROM_B, "MRI + PET",
                   black_is_empty=True),
        FusionTask("MIF-SPECT", "MIF", 1, "mri", "spect", "MRI", "SPECT", ColorPolicy.CHROMA_FROM_B,
                   "MRI + SPECT", black_is_empty=True),
        FusionTask("MEF", "MEF", 2, "under", "over", "Under-exposed", "Over-exposed",
                   ColorPolicy.SATURATION_WEIGHTED, "under- + over-exposed"),
        FusionTask("MFF", "MFF", 3, "a", "b", "Near focus", "Far focus", ColorPolicy.SATURATION_WEIGHTED,
                   "near- + far-focused"),
    )
}

FAMILIES: tuple[str, ...] = ("IVF", "MIF", "MEF", "MFF")
"""The four task families, in the default continual-learning order."""


def _normalise_name(name: str) -> str:
    # "mif (pet)", "MIF_PET", "mif-pet" and "MIF PET" all mean MIF-PET.
    cleaned = name.strip().upper().replace("(", " ").replace(")", " ").replace("_", " ").replace("-", " ")
    return "-".join(cleaned.split())


def get_task(name: str | FusionTask) -> FusionTask:
    """Look a task up by name, case-insensitively ("ivf", "MIF-PET", "MIF (PET)", "mif_pet").

    Raises:
        ValueError: for an unknown name; the message lists the known tasks.
    """
    if isinstance(name, FusionTask):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task must be a string such as 'IVF', got {type(name).__name__}.")
    task = TASKS.get(_normalise_name(name))
    if task is None:
        raise ValueError(f"Unknown task {name!r}. Known tasks: {', '.join(TASKS)}.")
    return task


def task_for_modality_b(family: str, modality_b: str) -> FusionTask:
    """The task of a data-set pair, e.g. ("MIF", "pet") -> MIF-PET, ("IVF", "vi") -> IVF."""
    for task in TASKS.values():
        if task.family == family.upper() and task.modality_b == modality_b.lower():
            return task
    return get_task(family)
