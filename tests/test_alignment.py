"""fusionfm.alignment on a real unregistered focus stack (FocusStackPCB: the magnification drifts 2-3.5 %) and on
real exposure brackets (Waterloo), registered and with one frame moved."""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import DATA, make_pipeline
from skimage.transform import SimilarityTransform, warp

from fusionfm import FusionImageProcessor, MisregistrationWarning
from fusionfm.alignment import align_frames, bracket_misregistration, misregistration, misregistration_threshold

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
    with pytest.raises(ValueError, match="align=True registers the frames of one exposure or focus pair or stack"):
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


def _bracket(name: str) -> list[PIL.Image.Image]:
    return [PIL.Image.open(path) for path in sorted((DATA / "MEF" / "Waterloo" / "sequences" / name).glob("*.png"))]


@pytest.mark.parametrize("sequence", ["House", "Office", "Candle"])
def test_a_misregistered_exposure_bracket_is_detected_and_a_registered_one_is_not(sequence):
    frames = _bracket(sequence)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisregistrationWarning)
        make_pipeline()(frames, task="MEF", processing_resolution=128)  # the check runs on the full frames
    moved = len(frames) // 2 + 1
    shift = SimilarityTransform(scale=1.02, translation=(4, 4))  # corners move by about 18 px
    frames[moved] = PIL.Image.fromarray((warp(np.asarray(frames[moved]), shift, order=1, mode="edge") * 255
                                         ).round().astype(np.uint8))
    with pytest.warns(MisregistrationWarning, match=rf"frames .*{moved}.* displaced by up to 1[6-9] pixels"):
        make_pipeline()(frames, task="MEF", processing_resolution=128)


def test_bracket_check_compares_neighbouring_exposures():
    processor = FusionImageProcessor()
    frames = [processor.to_tensor_list(frame)[0] for frame in _bracket("Office")]
    found = bracket_misregistration(frames[::-1])  # given brightest first: still ordered by brightness
    darkest, brightest = len(frames) - 1, 0
    assert found[0][0] == darkest and found[-1][1] == brightest
    assert all(moved < 3 for _, _, moved in found), found
