"""The bundled default model (model/): loads offline and fuses a real example pair of every task well."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT

from fusionfm import UNET_PRESETS, FusionFMPipeline, get_task, load_image
from fusionfm.color import luminance
from fusionfm.hub import BUNDLED_MODEL_DIR
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.metrics import qabf

EXAMPLES = REPO_ROOT / "examples"
TASKS = ("IVF", "MIF-CT", "MIF-PET", "MIF-SPECT", "MEF", "MFF")


@pytest.fixture(scope="module")
def bundled(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.delenv("FUSIONFM_MODEL", raising=False)
    pipeline = FusionFMPipeline.from_pretrained()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _first_example(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    spec = get_task(task)
    path_a = sorted((EXAMPLES / task).glob(f"*_{spec.modality_a}.*"))[0]
    path_b = next((EXAMPLES / task).glob(path_a.name.replace(f"_{spec.modality_a}.", f"_{spec.modality_b}.")))
    processor = FusionImageProcessor()
    return processor.to_tensor_list(load_image(path_a))[0][None], processor.to_tensor_list(load_image(path_b))[0][None]


def test_the_bundled_model_is_what_loads_by_default(bundled):
    assert (BUNDLED_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(BUNDLED_MODEL_DIR.rglob("*.bin")) and not list(BUNDLED_MODEL_DIR.rglob("*.pt"))
    assert bundled.unet.config.output_head == UNET_PRESETS["default"]["output_head"]


@pytest.mark.parametrize("task", TASKS)
def test_fuses_an_example_of_every_task_better_than_averaging_on_qabf(bundled, task):
    image_a, image_b = _first_example(task)
    fused = bundled(image_a, image_b, task=task, output_type="pt").images
    assert fused.shape[-2:] == image_a.shape[-2:]
    as_255 = [(luminance(x).double() * 255).round() for x in (fused, image_a, image_b)]
    fused_y, a_y, b_y = as_255
    average_y = ((a_y + b_y) / 2).round()
    # Not a copy of either input nor of their mean (mean absolute difference in grey levels).
    for other in (a_y, b_y, average_y):
        assert (fused_y - other).abs().mean() > 1.0
    assert float(qabf(fused_y, a_y, b_y)) > float(qabf(average_y, a_y, b_y))
