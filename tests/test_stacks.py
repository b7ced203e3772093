"""fusionfm.stacks through the pipeline: frames in any order, the well-exposedness terms, natural exposure for pairs,
two frames equal to the pair call, refused stacks."""

from __future__ import annotations

import pytest
import torch
from conftest import make_pipeline, pil_to_tensor, trained_like_default_pipe

from fusionfm import build_unet
from fusionfm.pipeline_fusionfm import SizeMismatchError

FP32 = dict(compute_dtype="fp32")


def test_a_stack_of_frames_fuses_in_any_order(tiny_pipe, exposure_bracket):
    start_pipe = make_pipeline(open_gates=False)
    default_pipe = make_pipeline()
    default_pipe.unet = build_unet("default", block_out_channels=(8, 16, 16, 16), norm_num_groups=4).eval()
    with torch.no_grad():
        default_pipe.unet.task_gate.fill_(0.5)  # the network's corrections on, as after training
    for pipe in (tiny_pipe, start_pipe, default_pipe):  # corrections on, at the start, the default architecture
        fused = pipe(exposure_bracket, task="MEF", output_type="pt", **FP32).images[0]
        assert fused.shape == (3, *exposure_bracket[0].size[::-1])
        reordered = pipe(exposure_bracket[::-1], task="MEF", output_type="pt", **FP32).images[0]
        torch.testing.assert_close(reordered, fused, atol=1e-5, rtol=0)  # float rounding only
        frames = torch.stack([pil_to_tensor(f) for f in exposure_bracket])
        assert (fused - frames.mean(dim=0)).abs().mean() > 1e-3  # not the plain mean


def test_the_well_exposedness_term_leads_a_stacks_base_by_hand():
    """Flat frames of 0.2, 0.5 and 0.95, no network logits: the base weights are exp(-(v - 0.5)^2 / 0.08)."""
    from fusionfm.stacks import blend_stack

    values = torch.tensor([0.2, 0.5, 0.95])
    frames = values.view(3, 1, 1, 1).expand(3, 1, 32, 48).clone()
    logits, gains = torch.zeros(3, 3, 1, 1), torch.ones(3, 2, 1, 1)
    weights = torch.exp(-((values - 0.5) ** 2) / 0.08)
    expected = float((weights * values).sum() / weights.sum())  # 0.456, where the plain mean is 0.55
    fused = blend_stack(frames, logits, gains, well_exposedness=1.0)
    torch.testing.assert_close(fused, torch.full_like(fused, expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(blend_stack(frames, logits, gains), torch.full_like(fused, 0.55), atol=1e-6, rtol=0)


def test_the_well_exposedness_term_leads_a_stacks_detail_by_hand():
    """Flat frames of 0.1, 0.5 and 0.9 carrying a faint checkerboard of amplitudes 0.002, 0.006, 0.004: with the
    term on the detail levels only, the base is the plain mean and the checkerboard's amplitude is the softmax of
    w * -(v - 0.5)^2 / 0.08 over the frames, mostly the middle frame's."""
    from fusionfm.stacks import blend_stack

    values, amplitudes = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.002, 0.006, 0.004])
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(48), indexing="ij")
    checkerboard = ((rows + cols) % 2 * 2 - 1).float()
    frames = values.view(3, 1, 1, 1) + amplitudes.view(3, 1, 1, 1) * checkerboard
    logits, gains = torch.zeros(3, 3, 1, 1), torch.ones(3, 2, 1, 1)
    for strength in (1.0, 2.0):
        weights = torch.softmax(-strength * (values - 0.5) ** 2 / 0.08, dim=0)
        amplitude = float((weights * amplitudes).sum())  # 0.0053 and 0.0059
        assert amplitude > 0.005
        expected = values.mean() + amplitude * checkerboard
        fused = blend_stack(frames, logits, gains, detail_well_exposedness=strength)[0, 0]
        torch.testing.assert_close(fused[4:-4, 4:-4], expected[4:-4, 4:-4], atol=2e-5, rtol=0)
    # Without the term every frame's checkerboard counts alike: amplitude 0.004.
    plain = blend_stack(frames, logits, gains)[0, 0]
    torch.testing.assert_close(plain[4:-4, 4:-4], (values.mean() + 0.004 * checkerboard)[4:-4, 4:-4], atol=2e-5,
                               rtol=0)


def test_a_base_blended_through_its_pyramid_spreads_a_change_of_weights():
    """Flat frames of 0.2 and 0.9 whose base weights switch from one to the other halfway across: blended per pixel
    the fused row steps within a few pixels; through the base's pyramid (down to 2 pixels) the change spreads over a
    third of the image (at the image size of its coarsest level), and both keep each frame's value at the far ends.
    Identical frames come back exactly either way."""
    from fusionfm.stacks import blend_stack

    frames = torch.tensor([0.2, 0.9]).view(2, 1, 1, 1).expand(2, 1, 64, 256).clone()
    logits, gains = torch.zeros(2, 3, 64, 256), torch.ones(2, 2, 1, 1)
    step = torch.where(torch.arange(256) < 128, 20.0, -20.0)
    logits[0, 2], logits[1, 2] = step, -step  # the base level's weights only

    def ramp_width(row: torch.Tensor) -> int:
        return int(((row > 0.27) & (row < 0.83)).sum())  # pixels between 10 % and 90 % of the step

    per_pixel = blend_stack(frames, logits, gains)[0, 0, 32]
    through_pyramid = blend_stack(frames, logits, gains, base_min_size=2)[0, 0, 32]
    assert ramp_width(per_pixel) <= 8 and ramp_width(through_pyramid) >= 64
    for row in (per_pixel, through_pyramid):
        assert abs(float(row[0]) - 0.2) < 1e-3 and abs(float(row[-1]) - 0.9) < 1e-3
    same = frames[:1].expand(2, -1, -1, -1)
    torch.testing.assert_close(blend_stack(same, logits, gains, base_min_size=2), frames[:1], atol=1e-6, rtol=0)


def test_natural_exposure_fuses_a_pair_as_a_two_frame_stack(exposure_bracket):
    pipe = trained_like_default_pipe()
    under, _, over = exposure_bracket
    natural = pipe(under, over, task="MEF", output_type="pt", natural_exposure=True, **FP32).images
    default = pipe(under, over, task="MEF", output_type="pt", **FP32).images
    assert (natural - default).abs().mean() > 1e-3
    for frames in ([under, over], [over, under]):
        torch.testing.assert_close(pipe(frames, task="MEF", output_type="pt", natural_exposure=True, **FP32).images,
                                   natural)
    batch = pipe([under, under], [over, over], task="MEF", output_type="pt", natural_exposure=True, **FP32).images
    torch.testing.assert_close(batch, torch.cat([natural, natural]))
    # Brackets of three or more blend by well-exposedness already: the setting changes nothing there.
    torch.testing.assert_close(pipe(exposure_bracket, task="MEF", output_type="pt", natural_exposure=True,
                                    **FP32).images,
                               pipe(exposure_bracket, task="MEF", output_type="pt", **FP32).images)


@pytest.mark.parametrize("kwargs,message", [
    (dict(task="IVF", natural_exposure=True), "applies to multi-exposure fusion \\(task 'MEF'\\) only"),
    (dict(task=["MEF", "MFF"], natural_exposure=True), "applies to multi-exposure fusion"),
    (dict(task="MEF", natural_exposure="yes"), "natural_exposure must be True or False, got 'yes'"),
    (dict(task="MEF", natural_exposure=True, num_inference_steps=2), "natural_exposure=True, are fused in one"),
])
def test_natural_exposure_calls_that_cannot_work_are_refused(exposure_bracket, kwargs, message):
    pipe = trained_like_default_pipe()
    under, _, over = exposure_bracket
    images = ([under, under], [over, over]) if isinstance(kwargs["task"], list) else (under, over)
    with pytest.raises(ValueError, match=message):
        pipe(*images, **kwargs)


def test_two_frames_through_the_stack_call_equal_the_pair_call(tiny_pipe, exposure_bracket):
    under, _, over = exposure_bracket
    pair = tiny_pipe(under, over, task="MEF", output_type="pt", **FP32).images
    for frames in ([under, over], [over, under]):  # MEF orders two frames darker first
        torch.testing.assert_close(tiny_pipe(frames, task="MEF", output_type="pt", **FP32).images, pair)


def test_stack_calls_that_cannot_work_are_refused(tiny_pipe, exposure_bracket):
    with pytest.raises(ValueError, match="IVF fuses exactly two images"):
        tiny_pipe(exposure_bracket, task="IVF")
    with pytest.raises(ValueError, match="A stack needs 2 to 64 frames, got 65"):
        tiny_pipe((exposure_bracket * 22)[:65], task="MEF")
    with pytest.raises(SizeMismatchError, match="frame 0 is 85x128 but frame 2 is 43x64"):
        tiny_pipe([*exposure_bracket[:2], exposure_bracket[2].reduce(2)], task="MFF")
    resized = tiny_pipe([*exposure_bracket[:2], exposure_bracket[2].reduce(2)], task="MFF", resize_b_to_a=True)
    assert resized.images[0].size == exposure_bracket[0].size
    with pytest.raises(ValueError, match="fused in one step"):
        tiny_pipe(exposure_bracket, task="MEF", num_inference_steps=2)
