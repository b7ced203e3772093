"""The task registry and the U-Net factory."""

from __future__ import annotations

import pytest
import torch

from fusionfm import TASKS, UNET_PRESETS, build_unet, get_task
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


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
def test_presets_predict_a_velocity_of_the_input_shape(preset):
    unet = build_unet(preset).eval()
    multiple = unet.size_multiple
    a, b = torch.rand(2, 2, 1, multiple * 2, multiple * 3).unbind(0)
    x = (a + b) / 2
    with torch.no_grad():
        velocity = unet(x, a, b, torch.tensor([0.0, 0.5]), torch.tensor([0, 3]))
    assert velocity.shape == x.shape and torch.isfinite(velocity).all()
    # The task and the time both condition the output.
    with torch.no_grad():
        other_task = unet(x, a, b, torch.tensor([0.0, 0.5]), torch.tensor([1, 2]))
        other_time = unet(x, a, b, torch.tensor([0.9, 0.1]), torch.tensor([0, 3]))
    assert (velocity - other_task).abs().max() > 1e-4 and (velocity - other_time).abs().max() > 1e-4


@pytest.mark.parametrize("head,bias", [("weight", [20.0]), ("gated", [20.0, 0.0])])
@pytest.mark.parametrize("t", [0.0, 0.5])
def test_source_weight_heads_reach_the_chosen_source_by_t_equals_one(head, bias, t):
    unet = build_unet("tiny", output_head=head).eval()
    # Silence the U-Net's last layer: weight logit 20 (all of a), residual (if any) 0.
    torch.nn.init.zeros_(unet.unet.conv_out.weight)
    unet.unet.conv_out.bias.data = torch.tensor(bias)
    a, b = torch.rand(2, 1, 1, 32, 48).unbind(0)
    x_t = (a + b) / 2
    with torch.no_grad():
        velocity = unet(x_t, a, b, torch.tensor([t]), torch.tensor([0]))
    torch.testing.assert_close(x_t + (1 - t) * velocity, a, atol=1e-6, rtol=0)


def test_gated_head_adds_its_residual():
    unet = build_unet("tiny", output_head="gated").eval()
    torch.nn.init.zeros_(unet.unet.conv_out.weight)
    unet.unet.conv_out.bias.data = torch.tensor([0.0, 0.1])  # equal weights, residual 0.1
    a, b = torch.rand(2, 1, 1, 32, 48).unbind(0)
    with torch.no_grad():
        velocity = unet((a + b) / 2, a, b, torch.tensor([0.0]), torch.tensor([0]))
    torch.testing.assert_close(velocity, torch.full_like(a, 0.1), atol=1e-6, rtol=0)


def test_velocity_head_and_unknown_heads():
    assert build_unet("tiny", output_head="velocity").unet.config.out_channels == 1
    with pytest.raises(ValueError, match="Unknown output_head 'x'; choose one of velocity, weight, gated, pyramid"):
        build_unet("tiny", output_head="x")


def test_default_preset_size():
    unet = build_unet("default")
    assert unet.size_multiple == 32
    parameters = sum(p.numel() for p in unet.parameters())
    assert 2_000_000 < parameters < 3_000_000
    assert not unet.config.mid_block_attention


def test_unknown_preset():
    known = "tiny, default, patch2, pyramid, weight, large"
    with pytest.raises(ValueError, match=f"Unknown U-Net preset 'huge'. Known presets: {known}"):
        build_unet("huge")
