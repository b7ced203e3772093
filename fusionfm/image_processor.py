"""Image canonicalisation, padding and output conversion for FusionFM (in the style of Marigold's
image processor).

Canonical form inside the library: a float32 tensor (C, H, W) in [0, 1] with C = 1 (gray) or
C = 3 (RGB). Accepted inputs:

- PIL images of mode 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16 (16-bit, e.g. thermal), I, F; of an
  animated or multi-page image, the frame it is on (the first, as opened).
- numpy arrays (H, W), (H, W, C) or a batch (B, H, W, C), C in {1, 3, 4}: uint8 (0..255), uint16 and
  other integer types (high bit depth, see ``high_bit_depth``), float in [0, 1].
- torch tensors (H, W), (C, H, W) or a batch (B, C, H, W), C in {1, 3, 4}: uint8, or float in [0, 1].
- a list of any of these for a batch.

Transparency (a fourth channel, modes RGBA / LA / PA, P with a transparent colour) is composited on black:
transparent pixels read as no signal. What is read in a way the user may not expect (transparency, a first frame
of several, deeper than 8 bits, CMYK, integer arrays) is announced with a :class:`FusionInputWarning`.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .color import is_gray

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
PipelineImageInput = ImageInput | Sequence[ImageInput]
OutputType = Literal["pil", "np", "pt"]

MIN_SIDE = 2
"""Smallest height or width (pixels) that can be fused."""

FLOAT_RANGE_TOLERANCE = 1e-3
"""Float inputs may exceed [0, 1] by this much (rounding) and are clipped; more is an error."""

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""PIL modes deeper than 8 bits; their pixels map to [0, 1] per ``high_bit_depth``."""

HIGH_BIT_DEPTH_RULES = ("minmax", "full_range")

TRANSPARENT_MODES = ("RGBA", "LA", "PA")

EXIF_ORIENTATION = 0x0112
"""EXIF tag of the orientation a viewer applies (1: as stored)."""

FRAMES_INFO_KEY = "fusionfm_frames"
"""Key in ``image.info`` where :func:`load_image` keeps the frame count of an animated or multi-page file."""


class FusionInputWarning(UserWarning):
    """An input is read in a way its owner may not expect (the message says how)."""


class SizeMismatchError(ValueError):
    """The images of one fusion differ in size (and resizing to the first was not asked for).

    Attributes: ``size_a``, ``size_b`` as (H, W) (the first image's and the odd one's), ``index`` of the pair in
    the batch (or of the frame in a stack).
    """

    def __init__(self, message: str, size_a: tuple[int, int], size_b: tuple[int, int], index: int) -> None:
        super().__init__(message)
        self.size_a, self.size_b, self.index = size_a, size_b, index


class FusionImageProcessor(ConfigMixin):
    """Turns user images into canonical tensors and fused tensors back into user formats.

    A ``ConfigMixin``: its settings are saved with the pipeline (``image_processor/processor_config.json``)
    and loaded with it.

    Args:
        high_bit_depth: how images deeper than 8 bits (uint16, PIL I;16 / I / F integer data) map
            to [0, 1]. ``"minmax"`` (default) stretches each image's own min..max to 0..1, which is
            what raw 16-bit thermal frames (using a few thousand codes) need; ``"full_range"``
            divides by 65535.
        border_margin: pixels of mirrored image added on every side before the network and cropped after, so
            the network sees the image border as interior. Without it the convolutions' zero padding shows as
            a band along the border (up to 10 grey levels on a multi-exposure example, 0.3 with 16 pixels).
            0 turns it off.
    """

    config_name = "processor_config.json"

    @register_to_config
    def __init__(self, high_bit_depth: Literal["minmax", "full_range"] = "minmax", border_margin: int = 16) -> None:
        super().__init__()
        self.high_bit_depth = high_bit_depth
        if isinstance(border_margin, bool) or not isinstance(border_margin, int) or border_margin < 0:
            raise ValueError(f"border_margin must be a whole number of pixels >= 0, got {border_margin!r}.")

    @property
    def high_bit_depth(self) -> str:
        """The high-bit-depth rule (``"minmax"`` or ``"full_range"``); setting it updates the config."""
        return self.config.high_bit_depth

    @high_bit_depth.setter
    def high_bit_depth(self, value: str) -> None:
        if value not in HIGH_BIT_DEPTH_RULES:
            raise ValueError(f"high_bit_depth must be 'minmax' or 'full_range', got {value!r}.")
        self.register_to_config(high_bit_depth=value)

    def input_notices(self, image: PIL.Image.Image, name: str) -> list[str]:
        """What a user should know about how an image is read (nothing for a still 8-bit L/RGB image)."""
        notices = []
        frames = getattr(image, "n_frames", image.info.get(FRAMES_INFO_KEY, 1))
        if frames > 1:
            frame = image.tell() + 1 if hasattr(image, "n_frames") else 1
            notices.append(f"The {name} image has {frames} frames (animated or multi-page); frame {frame} is used.")
        if image.mode in TRANSPARENT_MODES or (image.mode == "P" and "transparency" in image.info):
            notices.append(f"The {name} image has transparency; it is composited on black (transparent pixels "
                           "count as no signal).")
        rule = "scaled by its own min-max range" if self.high_bit_depth == "minmax" else "divided by 65535"
        if image.mode == "F":
            notices.append(f"The {name} image is F (32-bit float); it is read as it is if within [0, 1], else "
                           f"{rule}.")
        elif image.mode in HIGH_BIT_DEPTH_MODES:
            notices.append(f"The {name} image is {image.mode} (more than 8 bits); it is {rule}.")
        if image.mode == "CMYK":
            notices.append(f"The {name} image is CMYK; it is converted to RGB.")
        return notices

    # ------------------------------------------------------------------ input
    def to_tensor_list(self, images: PipelineImageInput, name: str = "image") -> list[torch.Tensor]:
        """Canonicalise one image, a batch or a list into a list of (C, H, W) float tensors.

        Raises:
            TypeError / ValueError: with a message naming ``name`` and what is wrong with it.
        """
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError(f"{name} is an empty list; pass at least one image.")
            tensors: list[torch.Tensor] = []
            for index, image in enumerate(images):
                tensors.extend(self._canonicalise(image, f"{name}[{index}]"))
            return tensors
        return self._canonicalise(images, name)

    def preprocess(self, image_a: PipelineImageInput, image_b: PipelineImageInput | None,
                   resize_to_first: bool = False) -> list[list[torch.Tensor]]:
        """The images of a pipeline call as fusions, each a list of canonical (C, H, W) tensors of one size: a pair
        per item of ``image_a`` and ``image_b`` (single images, lists or batches), or, with ``image_b`` None, one
        stack of the frames listed in ``image_a``.

        Raises:
            SizeMismatchError: the images of a fusion differ in size and ``resize_to_first`` is False (else they are
                resized to the first one's size).
            TypeError / ValueError: an input that cannot be read (named, see :meth:`to_tensor_list`).
        """
        if image_b is None:
            fusions = [[self.to_tensor_list(frame, f"frame {index}")[0] for index, frame in enumerate(image_a)]]
        else:
            images_a, images_b = self.to_tensor_list(image_a, "image_a"), self.to_tensor_list(image_b, "image_b")
            if len(images_a) != len(images_b):
                raise ValueError(f"Got {len(images_a)} image_a but {len(images_b)} image_b; they must pair up one to "
                                 "one.")
            fusions = [[a, b] for a, b in zip(images_a, images_b, strict=True)]
        for index, frames in enumerate(fusions):
            size = tuple(frames[0].shape[-2:])
            for position, frame in enumerate(frames[1:], start=1):
                if tuple(frame.shape[-2:]) == size:
                    continue
                if not resize_to_first:
                    raise SizeMismatchError(_size_message(size, tuple(frame.shape[-2:]), image_b is None, position,
                                                          index if len(fusions) > 1 else None),
                                            size, tuple(frame.shape[-2:]), position if image_b is None else index)
                frames[position] = self.resize(frame[None], size)[0]
        return fusions

    def load(self, path: str | Path) -> torch.Tensor:
        """An image file as a canonical (C, H, W) tensor; errors name the file (see :func:`load_image`)."""
        (image,) = self.to_tensor_list(load_image(path), name=str(path))
        return image

    def _canonicalise(self, image: Any, name: str) -> list[torch.Tensor]:
        if isinstance(image, PIL.Image.Image):
            if _is_closed(image):
                raise ValueError(f"{name} is a closed PIL image (its file was closed before fusion, for example by "
                                 "leaving a `with` block); keep it open, or call image.load() or image.copy() before "
                                 "closing it.")
            tensors = [self._from_pil(image, name)]
        elif isinstance(image, np.ndarray):
            tensors = self._from_numpy(image, name)
        elif isinstance(image, torch.Tensor):
            tensors = self._from_torch(image, name)
        elif isinstance(image, (str, Path)):
            raise TypeError(
                f"{name} is a path ({image!s}); load it first, e.g. with fusionfm.load_image(path)."
            )
        else:
            raise TypeError(
                f"{name} has unsupported type {type(image).__name__}; pass a PIL image, a numpy array "
                "or a torch tensor (or a list of them)."
            )
        for tensor in tensors:
            height, width = tensor.shape[-2:]
            if height < MIN_SIDE or width < MIN_SIDE:
                raise ValueError(
                    f"{name} is {height}x{width} pixels; FusionFM needs at least {MIN_SIDE}x{MIN_SIDE}."
                )
        return tensors

    def _from_pil(self, image: PIL.Image.Image, name: str) -> torch.Tensor:
        for notice in self.input_notices(image, name):
            warnings.warn(notice, FusionInputWarning, stacklevel=6)
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            # As viewers show it (load_image has done this already for files it opens).
            image = PIL.ImageOps.exif_transpose(image)
        mode = image.mode
        if mode == "F":  # 32-bit float pixels: as they are when in [0, 1], else by the high-bit-depth rule
            array = np.asarray(image, dtype=np.float64)
            if not np.isfinite(array).all():
                raise ValueError(f"{name} contains NaN or infinite values.")
            if array.size and (array.min() < 0 or array.max() > 1):
                return self._finish(self._deep_to_unit(torch.from_numpy(array)[None]), name)
        if mode in HIGH_BIT_DEPTH_MODES:
            return self._from_numpy(np.asarray(image), name, announce=False)[0]
        if mode in ("P", "PA", "LA"):
            transparent = mode != "P" or "transparency" in image.info
            image = image.convert("RGBA" if transparent else "RGB")
        elif mode == "1":
            image = image.convert("L")
        elif mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        return self._from_numpy(np.asarray(image), name, announce=False)[0]

    def _from_numpy(self, array: np.ndarray, name: str, announce: bool = True) -> list[torch.Tensor]:
        """``announce``: warn about integer data deeper than 8 bits (the PIL path has announced it already)."""
        if array.ndim == 4:
            return [self._from_numpy(item, f"{name}[{index}]", announce)[0] for index, item in enumerate(array)]
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(
                f"{name} is a numpy array of shape {array.shape}; expected (H, W), (H, W, C) or (B, H, W, C)."
            )
        if array.shape[2] not in (1, 3, 4):
            hint = " (channels first? numpy images are (H, W, C))" if array.shape[0] in (1, 3, 4) else ""
            raise ValueError(f"{name} has shape {array.shape}: {array.shape[2]} channels{hint}; expected 1, 3 or 4.")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {array.shape}); pass an image with pixels.")
        if announce and array.dtype.kind in "iu" and array.dtype != np.uint8:
            rule = ("scaled by its own min-max range" if self.high_bit_depth == "minmax"
                    else "divided by 65535")
            warnings.warn(f"{name} has {array.dtype} pixels, read as more than 8 bits: it is {rule} "
                          "(high_bit_depth). Pass uint8 for 8-bit data.", FusionInputWarning, stacklevel=6)
        if not array.dtype.isnative:  # e.g. big-endian 16-bit PNG data (PIL mode I;16B)
            array = array.astype(array.dtype.newbyteorder("="))
        array = np.ascontiguousarray(array) if array.flags.writeable else np.array(array)
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        return [self._finish(self._scale(tensor, name), name)]

    def _from_torch(self, tensor: torch.Tensor, name: str) -> list[torch.Tensor]:
        tensor = tensor.detach().cpu()
        if tensor.ndim == 4:
            return [self._from_torch(item, f"{name}[{index}]")[0] for index, item in enumerate(tensor)]
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3:
            raise ValueError(
                f"{name} is a tensor of shape {tuple(tensor.shape)}; expected (H, W), (C, H, W) or (B, C, H, W)."
            )
        if tensor.shape[0] not in (1, 3, 4):
            hint = " (channels last? tensors are (C, H, W))" if tensor.shape[-1] in (1, 3, 4) else ""
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}: {tensor.shape[0]} channels{hint}; expected 1, 3 or 4."
            )
        if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); pass an image with pixels.")
        if tensor.dtype not in (torch.uint8,) and not tensor.dtype.is_floating_point:
            raise TypeError(f"{name} has dtype {tensor.dtype}; tensors must be uint8 (0..255) or float in [0, 1].")
        return [self._finish(self._scale(tensor, name), name)]

    def _scale(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Map integer or float pixel values to float32 in [0, 1]."""
        if tensor.dtype == torch.bool:
            raise TypeError(f"{name} is boolean; pass uint8 (0..255) or float in [0, 1] pixels.")
        if tensor.dtype == torch.uint8:
            return tensor.float() / 255.0
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} contains NaN or infinite values.")
            low, high = tensor.min().item(), tensor.max().item()
            if low < -FLOAT_RANGE_TOLERANCE or high > 1.0 + FLOAT_RANGE_TOLERANCE:
                raise ValueError(
                    f"{name} is a float image with values in [{low:.4g}, {high:.4g}]; float images must be "
                    "in [0, 1] (divide 8-bit data by 255)."
                )
            return tensor.clamp(0.0, 1.0)
        if tensor.is_complex():
            raise TypeError(f"{name} has complex dtype {tensor.dtype}; pass real-valued pixels.")
        return self._deep_to_unit(tensor)

    def _deep_to_unit(self, tensor: torch.Tensor) -> torch.Tensor:
        """Data deeper than 8 bits (uint16, int32 from PIL mode I, float from mode F, ...) to [0, 1] by the
        ``high_bit_depth`` rule."""
        tensor = tensor.to(torch.float64)
        if self.high_bit_depth == "full_range":
            return (tensor / 65535.0).clamp(0.0, 1.0).float()
        low, high = tensor.min(), tensor.max()
        if high <= low:  # a constant frame has no range to stretch: it keeps its level on the 16-bit scale
            return (tensor / 65535.0).clamp(0.0, 1.0).float()
        return ((tensor - low) / (high - low)).float()

    @staticmethod
    def _finish(tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Composite a fourth (alpha) channel on black and collapse gray-content RGB to one channel."""
        if tensor.shape[0] == 4:
            tensor = tensor[:3] * tensor[3:]
        if tensor.shape[0] == 3 and is_gray(tensor):
            tensor = tensor.mean(dim=0, keepdim=True)
        return tensor.contiguous()

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def pad_to_multiple(images: torch.Tensor, multiple: int,
                        margin: int = 0) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Mirror-pad (B, C, H, W) by ``margin`` on every side, then replicate-pad at the bottom and right so the
        height and width divide by ``multiple``.

        Returns the padded tensor and the box (top, left, H, W) of the original pixels, for :meth:`crop`.
        """
        height, width = images.shape[-2:]
        if margin:
            # Reflection needs a margin below the side; tiny images repeat their edge instead.
            mode = "reflect" if margin < min(height, width) else "replicate"
            images = F.pad(images, (margin,) * 4, mode=mode)
        pad_h = (-images.shape[-2]) % multiple
        pad_w = (-images.shape[-1]) % multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        return images, (margin, margin, height, width)

    @staticmethod
    def crop(images: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Undo :meth:`pad_to_multiple`: (B, C, H', W') -> (B, C, H, W) for the box (top, left, H, W)."""
        top, left, height, width = box
        return images[..., top : top + height, left : left + width]

    @staticmethod
    def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear resize of (B, C, H, W) to ``size`` = (H', W'), antialiased when shrinking."""
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
        resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
        return resized.clamp(0.0, 1.0)

    @staticmethod
    def processing_size(size: tuple[int, int], processing_resolution: int | None) -> tuple[int, int]:
        """(H, W) whose long edge is ``processing_resolution`` (aspect kept); unchanged for None or 0."""
        if not processing_resolution:
            return size
        height, width = size
        scale = processing_resolution / max(height, width)
        return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))

    # ------------------------------------------------------------------ output
    @staticmethod
    def postprocess(
        images: list[torch.Tensor], output_type: OutputType
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor | list:
        """Convert fused (C, H, W) tensors in [0, 1] to the requested output type.

        ``"pil"``: a list of PIL images, mode L (gray) or RGB. ``"np"``: float32 (B, H, W, C).
        ``"pt"``: float32 (B, C, H, W). For np/pt, C is 1 when every result is gray and 3 otherwise
        (gray results are repeated to RGB in a mixed batch); results of different sizes cannot be
        stacked and come back as a list of (H, W, C) arrays / (C, H, W) tensors.
        """
        if output_type == "pil":
            return [to_pil(image) for image in images]
        channels = 1 if all(image.shape[0] == 1 for image in images) else 3
        images = [image.expand(channels, -1, -1) if image.shape[0] != channels else image for image in images]
        same_size = len({tuple(image.shape) for image in images}) == 1
        if output_type == "pt":
            return torch.stack(images) if same_size else list(images)
        arrays = [image.permute(1, 2, 0).float().numpy() for image in images]
        return np.stack(arrays) if same_size else arrays


def to_pil(image: torch.Tensor) -> PIL.Image.Image:
    """(C, H, W) float tensor in [0, 1] -> PIL image of mode L (C = 1) or RGB (C = 3)."""
    array = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


class ImageTooLargeError(ValueError):
    """An image file has more pixels than the caller allows (found from its header, before decoding)."""


def load_image(path: str | Path, max_pixels: int | None = None) -> PIL.Image.Image:
    """Open an image file, applying EXIF orientation and keeping its mode (L, RGB, I;16, ...).

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this, judged from the header before any decoding
            (None: PIL's own decompression-bomb limit only).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ValueError: the file is not an image PIL can decode (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is {_not_a_file(path)}; pass the path of an image file.")
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{path.name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
                    f"{max_pixels / 1e6:g} megapixels. Downscale it first."
                )
            image.load()
            frames = getattr(image, "n_frames", 1)
            upright = PIL.ImageOps.exif_transpose(image)
            upright.info[FRAMES_INFO_KEY] = frames  # the copy forgets it; input_notices announces it
            return upright
    except ImageTooLargeError:
        raise
    except PIL.Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{path.name} is too large to open safely ({error}). Downscale it first.") from error
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Could not read {path} as an image ({error}). Is the file complete and an image?") from error


def _not_a_file(path: Path) -> str:
    """What ``path`` is instead of a regular file, for messages."""
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink():
            return "a broken symbolic link"
        return "not there (no such file)"
    return "a folder" if path.is_dir() else "not a regular file"


def _is_closed(image: PIL.Image.Image) -> bool:
    """Whether ``image`` was closed (Pillow then fails on any use of its pixels): its pixel store is Pillow's
    deferred "closed" error, or it was never loaded and its file is gone."""
    stored = getattr(image, "_im", None)
    if type(stored).__name__ == "DeferredError":
        return True
    return stored is None and hasattr(image, "fp") and image.fp is None


def _size_message(size: tuple[int, int], other: tuple[int, int], stack: bool, position: int,
                  pair: int | None) -> str:
    if stack:
        return (f"frame 0 is {size[0]}x{size[1]} but frame {position} is {other[0]}x{other[1]} (HxW). A stack needs "
                "frames of one size: resize them, or pass resize_b_to_a=True to resize every frame to the first.")
    where = f" in pair {pair}" if pair is not None else ""
    return (f"image_a is {size[0]}x{size[1]} but image_b is {other[0]}x{other[1]} (HxW){where}. Fusion needs "
            "registered images of one size: resize or crop them, or pass resize_b_to_a=True to resize image_b to "
            "image_a's size.")
