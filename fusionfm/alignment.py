"""Registration of the frames of a stack to its middle frame (focus stacks whose magnification drifts, handheld
brackets), and a check that tells when frames are misregistered.

Similarity transforms (scale, rotation, shift) from ORB feature matches with RANSAC (scikit-image), found on
copies at most :data:`MATCH_SIDE` pixels on the long side and applied at full size. ORB compares intensity
order, not intensities, so exposure brackets can be aligned too, though their extreme frames match less well.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from skimage.exposure import equalize_hist
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import SimilarityTransform, warp

from .color import luminance
from .image_processor import FusionImageProcessor

MATCH_SIDE = 768
"""Long side (pixels) of the copies features are matched on for alignment."""

CHECK_SIDE = 320
"""Long side (pixels) of the copies the misregistration check matches on (fast: a few hundredths of a second per
frame)."""

MISREGISTRATION_SHARE = 0.01
"""Frames whose corners move by more than this share of the long side (and 10 pixels) count as misregistered.
Measured at the check's resolution: registered focus stacks (LytroTriple, 40 MFIFB pairs) at most 3 px against
the middle frame; the PCB focus stack 9-34 px at 2048 px. Exposure brackets are checked between neighbouring
exposures on histogram-equalised copies (their darkest and brightest frames match poorly: against the middle
frame, registered Waterloo brackets measured up to 16 px): registered Waterloo brackets at most 2.9 px, and
one frame moved by 18 px (scaled 2 %, shifted 4 px) measured 16.7-18.5 px in all 17 sequences."""


class MisregistrationWarning(UserWarning):
    """The frames of a stack do not line up; fusing them as they are leaves ghosts (pass ``align=True``)."""


def misregistration_threshold(height: int, width: int) -> float:
    """Corner displacement (pixels) above which frames of this size count as misregistered."""
    return max(10.0, MISREGISTRATION_SHARE * max(height, width))


def _match_size(height: int, width: int, match_side: int) -> tuple[int, int]:
    """(h, w) of the copies features are matched on: at most ``match_side`` on the long side, never enlarged."""
    return FusionImageProcessor.processing_size((height, width), min(match_side, max(height, width)))


def _gray(frame: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return FusionImageProcessor.resize(luminance(frame[None]), size)[0, 0].double().numpy()


def estimate_similarity(reference: np.ndarray, moving: np.ndarray, keypoints_per_image: int = 800,
                        ) -> SimilarityTransform | None:
    """The similarity transform taking ``reference`` coordinates (x, y) to ``moving`` ones, from ORB matches
    and RANSAC; None when too few features match (flat or unrelated images). Gray (H, W) arrays in [0, 1]."""
    keypoints, descriptors = [], []
    for image in (reference, moving):
        orb = ORB(n_keypoints=keypoints_per_image, fast_threshold=0.05)
        try:
            orb.detect_and_extract(image)
        except (RuntimeError, ValueError):  # no features at all (flat or tiny images)
            return None
        if len(orb.keypoints) < 8:  # too few features to match (flat, dark or tiny images)
            return None
        keypoints.append(orb.keypoints[:, ::-1])  # (row, col) -> (x, y)
        descriptors.append(orb.descriptors)
    matches = match_descriptors(descriptors[0], descriptors[1], cross_check=True, max_ratio=0.8)
    if len(matches) < 8:
        return None
    model, inliers = ransac((keypoints[0][matches[:, 0]], keypoints[1][matches[:, 1]]), SimilarityTransform,
                            min_samples=3, residual_threshold=1.5, max_trials=2000, rng=0)
    if model is None or inliers is None or inliers.sum() < 8:
        return None
    return model


def frame_transforms(frames: list[torch.Tensor], match_side: int = MATCH_SIDE) -> list[SimilarityTransform | None]:
    """For each (C, H, W) frame, the transform from the middle frame's full-size pixel coordinates to its own
    (identity for the middle frame, None where matching failed), matched at ``match_side`` pixels."""
    height, width = frames[0].shape[-2:]
    size = _match_size(height, width, match_side)
    scale = width / size[1]
    to_small, to_full = SimilarityTransform(scale=1 / scale), SimilarityTransform(scale=scale)
    middle = len(frames) // 2
    reference = _gray(frames[middle], size)
    transforms: list[SimilarityTransform | None] = []
    for index, frame in enumerate(frames):
        if index == middle:
            transforms.append(SimilarityTransform())
            continue
        small = estimate_similarity(reference, _gray(frame, size), 800 if match_side >= MATCH_SIDE else 300)
        transforms.append(None if small is None else SimilarityTransform(
            matrix=to_full.params @ small.params @ to_small.params))
    return transforms


def corner_displacement(transform: SimilarityTransform, height: int, width: int) -> float:
    """Largest distance (pixels) a corner of a height x width frame moves under ``transform``."""
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)
    return float(np.linalg.norm(transform(corners) - corners, axis=1).max())


def misregistration(frames: list[torch.Tensor], match_side: int = CHECK_SIDE) -> list[float]:
    """Per frame, how far (pixels at full size) its corners sit from the middle frame's; NaN where frames
    could not be matched."""
    height, width = frames[0].shape[-2:]
    return [float("nan") if transform is None else corner_displacement(transform, height, width)
            for transform in frame_transforms(frames, match_side)]


def bracket_misregistration(frames: list[torch.Tensor], match_side: int = CHECK_SIDE,
                            ) -> list[tuple[int, int, float]]:
    """Exposure brackets: (darker frame, brighter frame, corner displacement in pixels at full size) for each pair
    of neighbouring exposures (frames ordered by mean brightness), matched on histogram-equalised copies; NaN
    where a pair could not be matched."""
    height, width = frames[0].shape[-2:]
    size = _match_size(height, width, match_side)
    order = sorted(range(len(frames)), key=lambda index: float(luminance(frames[index][None]).mean()))
    grays = [equalize_hist(_gray(frame, size)) for frame in frames]
    found = []
    for darker, brighter in zip(order[:-1], order[1:], strict=True):
        transform = estimate_similarity(grays[darker], grays[brighter], 300)
        moved = float("nan") if transform is None else corner_displacement(transform, *size) * width / size[1]
        found.append((darker, brighter, moved))
    return found


def align_frames(frames: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[float]]:
    """Warp every (C, H, W) frame onto the middle one (bilinear, edges repeated); frames that cannot be matched
    stay as they are. Returns the frames and each one's corner displacement before alignment (pixels)."""
    height, width = frames[0].shape[-2:]
    aligned, moved = [], []
    for frame, transform in zip(frames, frame_transforms(frames), strict=True):
        if transform is None:
            aligned.append(frame)
            moved.append(float("nan"))
            continue
        moved.append(corner_displacement(transform, height, width))
        if moved[-1] < 0.05:
            aligned.append(frame)
            continue
        channels = [warp(channel.double().numpy(), transform, order=1, mode="edge", preserve_range=True)
                    for channel in frame]
        aligned.append(torch.from_numpy(np.stack(channels)).float().clamp(0.0, 1.0))
    return aligned, moved


def warn_if_misregistered(frames: list[torch.Tensor], family: str) -> None:
    """Warn (:class:`MisregistrationWarning`) when the (C, H, W) frames of a stack do not line up: focus stacks
    (MFF) against the middle frame, exposure brackets (MEF) between neighbouring exposures (see
    :data:`MISREGISTRATION_SHARE`)."""
    threshold = misregistration_threshold(*frames[0].shape[-2:])
    if family == "MFF":
        moved = misregistration(frames)
        pairs = [(len(frames) // 2, index, displacement) for index, displacement in enumerate(moved)]
    else:
        pairs = bracket_misregistration(frames)
    pairs = [pair for pair in pairs if pair[2] == pair[2]]  # NaN: the frames could not be matched
    if not pairs:
        return
    reference, frame, worst = max(pairs, key=lambda pair: pair[2])
    if worst > threshold:
        where = (f"frame {frame} is displaced by up to {worst:.0f} pixels against the middle frame"
                 if family == "MFF" else
                 f"frames {min(reference, frame)} and {max(reference, frame)} (neighbouring exposures) are "
                 f"displaced by up to {worst:.0f} pixels against each other")
        warnings.warn(f"The frames do not line up: {where}. Fused as they are they leave ghosts; pass "
                      "align=True to register them first.", MisregistrationWarning, stacklevel=4)
