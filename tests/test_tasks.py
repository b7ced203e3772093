"""fusionfm.tasks: the task registry, its names and class ids."""

from __future__ import annotations

import pytest

from fusionfm import TASKS, get_task
from fusionfm.tasks import FAMILIES, NUM_TASK_CLASSES, ColorPolicy, task_for_modality_b


@pytest.mark.parametrize("alias,name", [("ivf", "IVF"), ("MIF (PET)", "MIF-PET"), ("mif_spect", "MIF-SPECT"),
                                        (" mef ", "MEF"), ("MIF-CT", "MIF-CT")])
def test_task_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_the_known_ones():
    known = "IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF, MFF"
    with pytest.raises(ValueError, match=f"Unknown task 'XRAY'. Known tasks: {known}"):
        get_task("XRAY")


def test_registry_is_consistent():
    assert {task.family for task in TASKS.values()} == set(FAMILIES)
    assert {task.class_id for task in TASKS.values()} == set(range(NUM_TASK_CLASSES))
    assert {TASKS[name].class_id for name in ("MIF", "MIF-CT", "MIF-PET", "MIF-SPECT")} == {1}
    assert (TASKS["IVF"].label_a, TASKS["IVF"].label_b) == ("Infrared", "Visible")
    assert TASKS["MEF"].color_policy == ColorPolicy.SATURATION_WEIGHTED
    assert task_for_modality_b("MIF", "pet").name == "MIF-PET"
    assert task_for_modality_b("IVF", "vi").name == "IVF"
