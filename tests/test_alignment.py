"""fusionfm.alignment on a real unregistered focus stack (FocusStackPCB: the magnification drifts 2-3.5 %)."""

from __future__ import annotations

import warnings

import PIL.Image
import pytest
import torch
from conftest import DATA, make_pipeline

from fusionfm import FusionImageProcessor, MisregistrationWarning
from fusionfm.alignment import align_frames, misregistration, misregistration_threshold

PCB = DATA / "MFF" / "FocusStackPCB"


@pytest.fixture(scope="module")
def pcb_frames() -> list[PIL.Image.Image]:
    """Frames 0, 3 and 6 of the stack at 1024x768."""
    return [PIL.Image.open(PCB / f"{index:02d}.jpg").reduce(2) for index in (0, 3, 6)]


def test_the_stack_is_misregistered_and_alignment_fixes_it(pcb_frames):
    processor = FusionImageProcessor()
    frames = [processor.to_tensor_list(frame)[0] for frame in pcb_frames]
    limit = misregistration_threshold(768, 1024)
    before = misregistration(frames)
    assert before[1] == 0 and min(before[0], before[2]) > limit  # 13 and 16 px, against 10.2 px allowed
    aligned, moved = align_frames(frames)
    assert moved[0] == pytest.approx(before[0], abs=3) and moved[1] == 0
    after = misregistration(aligned)
    assert max(after) < limit, after
    assert torch.equal(aligned[1], frames[1])  # the middle frame is the reference


def test_the_pipeline_warns_about_misregistered_frames_and_aligns_on_request(pcb_frames):
    pipe = make_pipeline()
    with pytest.warns(MisregistrationWarning, match="frame 0 is displaced by up to .*align=True"):
        pipe(pcb_frames, task="MFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisregistrationWarning)
        aligned = pipe(pcb_frames, task="MFF", align=True).images[0]
        pair = pipe(pcb_frames[0], pcb_frames[2], task="MFF", align=True).images[0]
    assert aligned.size == pair.size == pcb_frames[0].size
    with pytest.raises(ValueError, match="IVF fuses exactly two images"):
        pipe(pcb_frames[0], pcb_frames[2], task="IVF", align=True)


@pytest.mark.parametrize("stack", ["triple-1", "triple-4"])
def test_a_registered_focus_stack_raises_no_warning(stack):
    frames = [PIL.Image.open(path) for path in sorted((DATA / "MFF" / "LytroTriple" / stack).glob("*.*"))
              if path.suffix.lower() in (".png", ".jpg", ".tif", ".bmp")]
    assert len(frames) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisregistrationWarning)
        make_pipeline()(frames, task="MFF")


def test_frames_without_features_are_left_as_they_are():
    flat = [torch.full((3, 48, 64), value) for value in (0.2, 0.5, 0.8)]
    assert all(m != m for i, m in enumerate(misregistration(flat)) if i != 1)  # NaN: could not be matched
    aligned, moved = align_frames(flat)
    assert all(torch.equal(a, f) for a, f in zip(aligned, flat, strict=True))
