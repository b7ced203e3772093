"""FusionFMPipeline: fuse two registered images in one flow-matching step."""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .alignment import (
    MisregistrationWarning,
    align_frames,
    bracket_misregistration,
    misregistration,
    misregistration_threshold,
)
from .color import luminance, recombine, recombine_frames
from .compilation import CompiledUNet, compile_unet
from .finishing import favour_the_lit_source, keep_shared_extremes
from .hub import DOWNLOAD_KWARGS, default_model, resolve_pipeline_path
from .image_processor import FusionImageProcessor, OutputType, PipelineImageInput
from .pyramid import mean_levels
from .scheduler import FlowMatchFusionScheduler
from .stacks import (
    MAX_FRAMES,
    MEF_DETAIL_STRENGTH,
    MEF_DETAIL_WELL_EXPOSEDNESS,
    MEF_PAIR_BASE_MIN_SIZE,
    MEF_STACK_DETAIL_GAINS,
    MEF_WELL_EXPOSEDNESS,
    blend_stack,
)
from .tasks import FusionTask, get_task
from .tiling import fuse_in_tiles
from .unet import FusionUNet

OUTPUT_TYPES = ("pil", "np", "pt")

TILE_OVERLAP_DIVISOR = 4
"""Tiles overlap by an eighth of their side (128 pixels for 1024-pixel tiles)."""

MAX_UNTILED_PIXELS = 16_000_000
"""Above this many processing pixels a call must be tiled (the network's memory grows with the pixels it sees:
about 270 MB per megapixel in bf16, 380 MB in fp32)."""
IMAGE_PROCESSOR_FOLDER = "image_processor"
_DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


@dataclass
class FusionFMPipelineOutput(BaseOutput):
    """Output of :class:`FusionFMPipeline`.

    Args:
        images: fused images in the input pairs' order: a list of PIL images (mode L or RGB), a numpy
            array (B, H, W, C) or a tensor (B, C, H, W) in [0, 1]. C is 1 when every result is gray.
            Results of different sizes come back as a list for ``np``/``pt``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list


class SizeMismatchError(ValueError):
    """The two images of a pair differ in size (and ``resize_b_to_a`` was not asked for).

    Attributes: ``size_a``, ``size_b`` as (H, W), ``index`` of the pair in the batch.
    """

    def __init__(self, message: str, size_a: tuple[int, int], size_b: tuple[int, int], index: int) -> None:
        super().__init__(message)
        self.size_a, self.size_b, self.index = size_a, size_b, index


def is_whole_number(value) -> bool:
    """A Python, numpy or 0-d torch integer (not a bool)."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not (value.dtype.is_floating_point or value.dtype.is_complex
                                        or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def whole_number(value, name: str, minimum: int, what: str = "") -> int:
    """``value`` as an int if it is a whole number (:func:`is_whole_number`) >= ``minimum``, else a ValueError that
    names it (``what``: what the number means, for the message)."""
    if not is_whole_number(value) or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}{what}, got {value!r}.")
    return int(value)


def check_tile_size(tile_size, name: str = "tile_size") -> int:
    """0 (no tiling) or a whole number of pixels of at least 64, as an int."""
    if not is_whole_number(tile_size) or (int(tile_size) != 0 and int(tile_size) < 64):
        raise ValueError(f"{name} must be 0 (no tiling) or a whole number of pixels >= 64, got {tile_size!r}.")
    return int(tile_size)


class NonFiniteResultError(RuntimeError):
    """The network produced NaN or infinite values (for example from half-precision weights on a CPU)."""


def check_finite(fused: torch.Tensor) -> torch.Tensor:
    """``fused`` if every value is finite, else a :class:`NonFiniteResultError` naming the likely causes."""
    if not bool(torch.isfinite(fused).all()):
        raise NonFiniteResultError(
            "The network returned NaN or infinite values, so no image is returned. Likely causes: weights moved to "
            "float16 on a CPU (use float32 or bf16) or weights that are damaged; reload the model with "
            "FusionFMPipeline.from_pretrained().")
    return fused


@dataclass
class _PreparedPair:
    image_a: torch.Tensor  # (C, H, W) at input resolution
    image_b: torch.Tensor
    y_a: torch.Tensor  # (1, h, w) at processing resolution
    y_b: torch.Tensor
    task: FusionTask


class FusionFMPipeline(DiffusionPipeline):
    """Fuses image pairs (IVF, MIF, MEF, MFF) with a one-step flow-matching U-Net.

    The U-Net predicts the velocity of a straight flow from x0 = coupling(a, b) to the fused
    luminance; the scheduler integrates it (one Euler step by default). Where every source is black (white), so is
    the fused luminance, and for scans (MIF) the fusion moves to the other source where one is black all around
    (:mod:`fusionfm.finishing`). Colour is put back from the inputs according to the task (DESIGN.md, "Colour").

    Precision: ``default_compute_dtype`` (in ``pipe.config``) is ``"auto"``: bf16 autocast where the device
    runs it natively (a CPU with AVX512-BF16 or AMX, a GPU with bf16), which is about 2-3x faster than fp32
    on such CPUs at about 1 % of the output range; fp32 elsewhere. A pipeline loaded with ``from_pretrained``
    for that CPU path gets channels-last weights once, at load. Pass ``compute_dtype="fp32"`` to a call (or
    set ``default_compute_dtype="fp32"``) for full precision.

    Args:
        unet: the velocity network.
        scheduler: the flow-matching scheduler (coupling and time grid).
        image_processor: input canonicalisation and output conversion (its settings save with the pipeline).
        default_num_inference_steps: steps used when the call does not say (1).
        default_processing_resolution: long edge to process at when the call does not say (None: the
            input's own resolution).
        default_compute_dtype: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``: the U-Net's precision when the
            call does not say.
        max_num_inference_steps: calls asking for more steps are refused before any work (time grows linearly
            with steps: about 0.1-0.3 s per step at 640x480 on 2 CPU cores; one step is what the model is
            trained for).
        max_processing_pixels: calls whose processing size has more pixels than this are refused before any
            work (64 million: the image-size tensors of a call take about 40 bytes per pixel).
        default_tile_size: images larger than this on a side are fused in overlapping tiles of this many pixels
            (blended with feathered weights), so the network's memory stays that of one tile: measured about
            270 MB per megapixel in bf16 and 380 MB in fp32, i.e. 0.3-0.4 GB for 1024-pixel tiles. 0 turns tiling
            off; untiled calls are then limited to 16 megapixels. Raise a cap or change the tile size at load,
            ``from_pretrained(..., max_processing_pixels=...)``, or with ``pipe.register_to_config(...)``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: FusionUNet,
        scheduler: FlowMatchFusionScheduler,
        image_processor: FusionImageProcessor | None = None,
        default_num_inference_steps: int = 1,
        default_processing_resolution: int | None = None,
        default_compute_dtype: str = "auto",
        max_num_inference_steps: int = 100,
        max_processing_pixels: int = 64_000_000,
        default_tile_size: int = 1024,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        if default_compute_dtype != "auto" and default_compute_dtype not in _DTYPE_NAMES:
            raise ValueError(f"default_compute_dtype must be 'auto' or one of {', '.join(_DTYPE_NAMES)}, "
                             f"got {default_compute_dtype!r}.")
        for name, cap in (("max_num_inference_steps", max_num_inference_steps),
                          ("max_processing_pixels", max_processing_pixels)):
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                raise ValueError(f"{name} must be a positive integer, got {cap!r}.")
        check_tile_size(default_tile_size, "default_tile_size")
        self.register_to_config(
            default_num_inference_steps=default_num_inference_steps,
            default_processing_resolution=default_processing_resolution,
            default_compute_dtype=default_compute_dtype,
            max_num_inference_steps=max_num_inference_steps,
            max_processing_pixels=max_processing_pixels,
            default_tile_size=default_tile_size,
        )
        self.image_processor = image_processor or FusionImageProcessor()
        # The scheduler's grid is per call state: one call at a time per pipeline object.
        self._call_lock = threading.Lock()
        self._compiled_unet: CompiledUNet | None = None

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs
    ) -> FusionFMPipeline:
        """Load from a local folder or a Hub repo id (downloaded first; cache and offline mode honoured).

        Without a name: ``$FUSIONFM_MODEL`` if set, else the model bundled in the repository (``model/``).

        Weights are read from safetensors only. Download keyword arguments (``revision``,
        ``cache_dir``, ``token``, ``local_files_only``, ``force_download``, ``proxies``) go to the
        Hub; the rest (e.g. ``dtype``) to diffusers.
        """
        download_kwargs = {key: kwargs.pop(key) for key in DOWNLOAD_KWARGS if key in kwargs}
        if pretrained_model_name_or_path is None:
            pretrained_model_name_or_path = default_model()
        folder = resolve_pipeline_path(pretrained_model_name_or_path, **download_kwargs)
        kwargs["use_safetensors"] = True
        processor = kwargs.pop("image_processor", None)
        processor_dir = folder / IMAGE_PROCESSOR_FOLDER
        if processor is None and (processor_dir / FusionImageProcessor.config_name).is_file():
            processor = FusionImageProcessor.from_config(FusionImageProcessor.load_config(processor_dir))
        pipeline = super().from_pretrained(folder, image_processor=processor, **kwargs)
        if pipeline._execution_device.type == "cpu" and pipeline._resolve_compute_dtype(None) == torch.bfloat16:
            # oneDNN's bf16 convolutions are fastest on channels-last weights (about 1.5x here).
            pipeline.unet.to(memory_format=torch.channels_last)
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (safetensors), plus the image processor's config."""
        super().save_pretrained(save_directory, **kwargs)
        self.image_processor.save_config(os.path.join(save_directory, IMAGE_PROCESSOR_FOLDER))

    def compile_unet(self, compute_dtype: torch.dtype | str | None = None, cache_dir: str | os.PathLike | None = None,
                     warm_up_size: tuple[int, int] | None = (480, 640)) -> None:
        """Serve calls in ``compute_dtype`` (default: the pipeline's) with the U-Net compiled by ``torch.compile``.

        Compiles at once on a ``warm_up_size`` (height, width) input, then swaps the compiled network in; calls
        made meanwhile from other threads run eager (the app compiles this way in the background). The first
        compilation takes minutes on a small CPU, later processes load it from ``cache_dir`` (default
        ``~/.cache/fusionfm/inductor``; :mod:`fusionfm.compilation`). ``warm_up_size=None`` compiles at the first
        call instead. Results equal the eager ones within the precision's rounding. :meth:`disable_compile` undoes it.
        """
        dtype = self._resolve_compute_dtype(compute_dtype)
        module = compile_unet(self.unet, cache_dir)
        if warm_up_size is not None:
            multiple, margin = self.unet.size_multiple, self.image_processor.config.border_margin
            zeros, _ = self.image_processor.pad_to_multiple(torch.zeros(1, 1, *warm_up_size), multiple, margin)
            self._run_unet(module, dtype, zeros, zeros, zeros, torch.zeros(1), torch.zeros(1, dtype=torch.long),
                           torch.zeros(1, 2))
        self._compiled_unet = CompiledUNet(module, dtype)

    def disable_compile(self) -> None:
        """Run the U-Net eager again (after :meth:`compile_unet`)."""
        self._compiled_unet = None

    @property
    def compiled_dtype(self) -> torch.dtype | None:
        """The precision whose calls run the compiled U-Net, or None (all eager)."""
        compiled = self._compiled_unet
        return compiled.dtype if compiled is not None else None

    # ------------------------------------------------------------------ validation
    @property
    def min_processing_side(self) -> int:
        """The smallest side (pixels) a call may shrink images to: the U-Net's size multiple (its patch times its
        halvings) or, for the pyramid head, the 2^(levels - 1) pixels its coarsest level needs, whichever is
        larger. Images already smaller are fused at their own size (padded)."""
        config = self.unet.config
        levels = config.pyramid_levels if config.output_head == "pyramid" else 1
        return max(self.unet.size_multiple, 2 ** (levels - 1))

    def check_options(self, task, num_inference_steps, processing_resolution, batch_size, output_type, tile_size,
                      detail_gain, natural_exposure, compute_dtype) -> tuple[int, int, int, int]:
        """Validate a call's options (of pairs and stacks alike) before any work, with a message that says what is
        wrong and what to pass instead. Whole numbers may be Python, numpy or 0-d torch integers; they come back
        as ints: (num_inference_steps, processing_resolution (0: the input's size), batch_size, tile_size)."""
        steps = whole_number(num_inference_steps, "num_inference_steps", 1)
        if steps > self.config.max_num_inference_steps:
            raise ValueError(
                f"num_inference_steps={steps} is above this pipeline's cap of "
                f"{self.config.max_num_inference_steps} (the model is trained for one step; time grows linearly with "
                "steps). Use fewer steps, or raise the cap: pipe.register_to_config(max_num_inference_steps=N)."
            )
        resolution = 0 if processing_resolution is None else whole_number(
            processing_resolution, "processing_resolution", 0, " (0: the input's own size; else the long side in "
            "pixels)")
        if 0 < resolution < self.min_processing_side:
            raise ValueError(
                f"processing_resolution={resolution} is below this model's minimum of {self.min_processing_side} "
                f"pixels (its network works on blocks of {self.unet.size_multiple} pixels); pass 0 for the input's "
                f"own size or a long side of at least {self.min_processing_side}.")
        batch = whole_number(batch_size, "batch_size", 1)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}.")
        tile = check_tile_size(tile_size)
        for name in task if isinstance(task, (list, tuple)) else [task]:
            get_task(name)  # an unknown name is refused with the list of known tasks
        self.check_detail_gain(detail_gain)
        self.check_natural_exposure(natural_exposure, task)
        self._check_weights_precision()
        self._resolve_compute_dtype(compute_dtype)
        return steps, resolution, batch, tile

    def _check_weights_precision(self) -> None:
        """Refuse half-precision (float16) weights on the CPU, whose arithmetic overflows to NaN there."""
        if self.unet.dtype == torch.float16 and self._execution_device.type == "cpu":
            raise ValueError(
                "The U-Net's weights are float16, which the CPU cannot compute with (the fused image would be NaN). "
                "Move them back to float32 with pipe.to(torch.float32) (or load without dtype=torch.float16); "
                "bf16 runs natively on CPUs with AVX512-BF16: pass compute_dtype='bf16' to a call instead.")

    def check_inputs(
        self,
        image_a: PipelineImageInput,
        image_b: PipelineImageInput,
        task: str | FusionTask | Sequence[str | FusionTask],
        num_inference_steps: int,
        processing_resolution: int | None,
        resize_b_to_a: bool,
        batch_size: int,
        output_type: str,
        tile_size: int = 0,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[FusionTask]]:
        """Validate every argument and canonicalise the images; raise with a clear message otherwise.

        Returns the lists of (C, H, W) tensors for a and b (b resized to a if asked) and one task
        per pair.
        """
        if image_a is None or image_b is None:
            raise ValueError("Both image_a and image_b are required (or, for MEF and MFF, a list of frames as "
                             "image_a).")
        if isinstance(image_a, (list, tuple)) != isinstance(image_b, (list, tuple)):
            raise ValueError("Pass image_a and image_b both as single images or both as lists of the same length.")

        images_a = self.image_processor.to_tensor_list(image_a, "image_a")
        images_b = self.image_processor.to_tensor_list(image_b, "image_b")
        if len(images_a) != len(images_b):
            raise ValueError(f"Got {len(images_a)} image_a but {len(images_b)} image_b; they must pair up one to one.")

        if isinstance(task, (list, tuple)):
            if len(task) != len(images_a):
                raise ValueError(f"Got {len(task)} tasks for {len(images_a)} pairs; pass one task or one per pair.")
            tasks = [get_task(name) for name in task]
        else:
            tasks = [get_task(task)] * len(images_a)

        for index, (a, b) in enumerate(zip(images_a, images_b, strict=True)):
            if a.shape[-2:] == b.shape[-2:]:
                continue
            if not resize_b_to_a:
                where = f" in pair {index}" if len(images_a) > 1 else ""
                raise SizeMismatchError(
                    f"image_a is {a.shape[-2]}x{a.shape[-1]} but image_b is {b.shape[-2]}x{b.shape[-1]} (HxW){where}. "
                    "Fusion needs registered images of one size: resize or crop them, or pass "
                    "resize_b_to_a=True to resize image_b to image_a's size.",
                    tuple(a.shape[-2:]), tuple(b.shape[-2:]), index,
                )
            images_b[index] = self.image_processor.resize(b[None], tuple(a.shape[-2:]))[0]
        for index, a in enumerate(images_a):
            self._check_processing_size(tuple(a.shape[-2:]), processing_resolution, tile_size,
                                        where=f" (pair {index})" if len(images_a) > 1 else "")
        return images_a, images_b, tasks

    def _check_processing_size(self, size: tuple[int, int], processing_resolution: int, tile_size: int,
                               what: str = "", where: str = "", unit: str = "megapixels") -> None:
        """Refuse a processing size (of input ``size`` (H, W) at ``processing_resolution``) above the pipeline's
        cap, one the network would take in one piece above MAX_UNTILED_PIXELS, or one shrunk below
        :attr:`min_processing_side`. ``what``, ``where`` and ``unit`` name the input in the message."""
        height, width = self.image_processor.processing_size(size, processing_resolution)
        if min(height, width) < min(self.min_processing_side, *size):
            raise ValueError(
                f"processing_resolution={processing_resolution} would fuse {what}of {size[1]}x{size[0]} pixels{where} "
                f"at {width}x{height}, below this model's minimum of {self.min_processing_side} pixels per side. Pass "
                "0 (the input's own size) or a larger processing_resolution.")
        if height * width > self.config.max_processing_pixels:
            raise ValueError(
                f"Fusing {what}at {height}x{width} pixels{where} is {height * width / 1e6:.1f} {unit}, above this "
                f"pipeline's cap of {self.config.max_processing_pixels / 1e6:g}. Pass a smaller "
                "processing_resolution (e.g. 2048), or raise the cap: pipe.register_to_config(max_processing_pixels=N)."
            )
        network_pixels = min(height, tile_size or height) * min(width, tile_size or width)
        if network_pixels > MAX_UNTILED_PIXELS:
            raise ValueError(
                f"Fusing {what}at {height}x{width} pixels{where} in one piece (tile_size={tile_size}) needs the "
                f"network on {network_pixels / 1e6:.1f} megapixels at once, above {MAX_UNTILED_PIXELS / 1e6:g} (about "
                "0.3-0.4 GB of memory per megapixel). Use tiles, e.g. tile_size=1024."
            )

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image_a: PipelineImageInput,
        image_b: PipelineImageInput | None = None,
        task: str | FusionTask | Sequence[str | FusionTask] = "IVF",
        num_inference_steps: int | None = None,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resize_b_to_a: bool = False,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        compute_dtype: torch.dtype | str | None = None,
        output_type: OutputType = "pil",
        tile_size: int | None = None,
        align: bool = False,
        detail_gain: float | None = None,
        natural_exposure: bool = False,
        show_progress_bar: bool = True,
        return_dict: bool = True,
    ) -> FusionFMPipelineOutput | tuple:
        """Fuse ``image_a`` with ``image_b``.

        Args:
            image_a, image_b: the two sources (see :mod:`fusionfm.image_processor` for accepted types);
                for IVF a is infrared and b visible, for MIF a is MRI and b CT/PET/SPECT, for MEF a is
                under- and b over-exposed, for MFF a is near- and b far-focused. For MEF and MFF, ``image_a``
                may instead be a list of 2 to 64 frames of one scene (an exposure bracket or focus stack, any
                order) with ``image_b`` None: the result is one fused image (:mod:`fusionfm.stacks`; one step).
            task: a task name (``"IVF"``, ``"MIF-PET"``, ``"MEF"``, ...) or one per pair.
            num_inference_steps: Euler steps (default: the pipeline config, 1).
            processing_resolution: long edge in pixels to fuse at; None uses the config default and 0
                the input resolution.
            match_input_resolution: resize the result back to the input size (else keep the
                processing size).
            resize_b_to_a: resize image_b to image_a's size instead of rejecting different sizes.
            batch_size: pairs per network call (pairs of the same processing size are batched).
            generator: random generator for the ``gaussian`` coupling.
            compute_dtype: ``"auto"``, ``"bf16"``, ``"fp32"``, ``"fp16"`` or a torch dtype; None uses the config's
                ``default_compute_dtype`` (``"auto"``: bf16 where the device runs it natively, else fp32).
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            tile_size: fuse images larger than this on a side in overlapping tiles of this size (None: the
                config's ``default_tile_size``, 1024; 0: in one piece), so memory is bounded by the tile.
            align: MEF and MFF: register every frame (or image_b) to the middle frame (to image_a) with a
                similarity transform from feature matches first (:mod:`fusionfm.alignment`). Without it, a focus
                stack whose frames do not line up is fused as it is, with a :class:`MisregistrationWarning`.
            detail_gain: the contrast gain of every detail level of the fusion (the network still chooses which
                source each detail comes from). None: the model's own, per task and learned (the benchmarked
                setting, 1.02-1.35, which sharpens beyond the sources); 1: the sources' own contrast, the most
                faithful (for focus stacks closest to the in-focus scene; for scans no added enhancement);
                between 1 / max_gain and max_gain of the model (0.5 and 2 for the bundled one).
            natural_exposure: MEF pairs only: blend the two exposures as brackets of three or more frames are, by
                well-exposedness (Mertens et al.), instead of towards the brighter source: skies and highlights keep
                their tones (a sunset stays a sunset), at less contrast than the benchmarked default (docs/quality.md,
                session 22). Brackets of three or more frames always blend so.
            show_progress_bar: show a progress bar over batches.
            return_dict: return a :class:`FusionFMPipelineOutput` rather than a tuple.
        """
        if num_inference_steps is None:
            num_inference_steps = self.config.default_num_inference_steps
        if processing_resolution is None:
            processing_resolution = self.config.default_processing_resolution
        if tile_size is None:
            tile_size = self.config.get("default_tile_size", 0)
        num_inference_steps, processing_resolution, batch_size, tile_size = self.check_options(
            task, num_inference_steps, processing_resolution, batch_size, output_type, tile_size, detail_gain,
            natural_exposure, compute_dtype)
        if image_b is None and isinstance(image_a, (list, tuple)):  # a stack of frames, canonicalised once
            frames, spec = self._check_frames(image_a, task, resize_b_to_a)
            if align:
                frames = align_frames(frames)[0]
            else:
                self._warn_if_misregistered(frames, spec)
            if len(frames) > 2 or natural_exposure:
                fused = self._fuse_frames(frames, spec, num_inference_steps, processing_resolution,
                                          match_input_resolution, batch_size, compute_dtype, output_type, tile_size,
                                          detail_gain, MEF_PAIR_BASE_MIN_SIZE if len(frames) == 2 else 0)
                images = self.image_processor.postprocess([fused], output_type)
                return FusionFMPipelineOutput(images=images) if return_dict else (images,)
            image_a, image_b = self._ordered_pair(frames, spec)
        elif align:
            image_a, image_b = self._aligned_pair(image_a, image_b, task, resize_b_to_a)
        images_a, images_b, tasks = self.check_inputs(
            image_a, image_b, task, num_inference_steps, processing_resolution, resize_b_to_a, batch_size,
            output_type, tile_size,
        )
        if natural_exposure:  # each pair through the stack blend
            fused = [self._fuse_frames([a, b], pair_task, num_inference_steps, processing_resolution,
                                       match_input_resolution, batch_size, compute_dtype, output_type, tile_size,
                                       detail_gain, MEF_PAIR_BASE_MIN_SIZE)
                     for a, b, pair_task in zip(images_a, images_b, tasks, strict=True)]
            images = self.image_processor.postprocess(fused, output_type)
            return FusionFMPipelineOutput(images=images) if return_dict else (images,)
        dtype = self._resolve_compute_dtype(compute_dtype)

        pairs = [
            self._prepare_pair(a, b, pair_task, processing_resolution)
            for a, b, pair_task in zip(images_a, images_b, tasks, strict=True)
        ]
        batches = self._batches(pairs, batch_size)

        with self._call_lock:
            fused_y: dict[int, torch.Tensor] = {}
            for indices in self.progress_bar(batches) if show_progress_bar else batches:
                fused = self._fuse_luminance([pairs[i] for i in indices], generator, dtype, num_inference_steps,
                                             tile_size, detail_gain)
                fused_y.update(zip(indices, fused, strict=True))

        results = [self._finish_pair(pairs[i], fused_y[i], match_input_resolution) for i in range(len(pairs))]
        images = self.image_processor.postprocess(results, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return FusionFMPipelineOutput(images=images)

    # ------------------------------------------------------------------ stacks of frames
    def _check_frames(self, frames: Sequence, task, resize_to_first: bool) -> tuple[list[torch.Tensor], FusionTask]:
        """Validate a stack call: a MEF or MFF task, 2 to MAX_FRAMES frames of one size; canonical tensors."""
        if isinstance(task, (list, tuple)):
            raise ValueError("A stack of frames is one fusion: pass one task, 'MEF' or 'MFF'.")
        spec = get_task(task)
        if spec.family not in ("MEF", "MFF"):
            raise ValueError(f"{spec.name} fuses exactly two images: pass image_a and image_b. Stacks of more "
                             "than two frames are for MEF (exposure brackets) and MFF (focus stacks).")
        if not 2 <= len(frames) <= MAX_FRAMES:
            raise ValueError(f"A stack needs 2 to {MAX_FRAMES} frames, got {len(frames)}.")
        tensors = [self.image_processor.to_tensor_list(frame, f"frame {index}")[0] for index, frame in
                   enumerate(frames)]
        size = tuple(tensors[0].shape[-2:])
        for index, tensor in enumerate(tensors[1:], start=1):
            if tuple(tensor.shape[-2:]) == size:
                continue
            if not resize_to_first:
                raise SizeMismatchError(
                    f"frame 0 is {size[0]}x{size[1]} but frame {index} is {tensor.shape[-2]}x{tensor.shape[-1]} "
                    "(HxW). A stack needs frames of one size: resize them, or pass resize_b_to_a=True to resize "
                    "every frame to the first.", size, tuple(tensor.shape[-2:]), index)
            tensors[index] = self.image_processor.resize(tensor[None], size)[0]
        return tensors, spec

    def _aligned_pair(self, image_a, image_b, task, resize_to_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """image_b registered to image_a (MEF and MFF pairs)."""
        if isinstance(image_a, (list, tuple)) or isinstance(image_b, (list, tuple)):
            raise ValueError("align=True fuses one pair or one stack: pass image_a and image_b as single images, or "
                             "a list of frames as image_a.")
        (a, b), _ = self._check_frames([image_a, image_b], task, resize_to_first)
        (b, a), _ = align_frames([b, a])  # the reference is the middle frame: of two, the second
        return a, b

    def _warn_if_misregistered(self, frames: list[torch.Tensor], spec: FusionTask) -> None:
        """Warn (MisregistrationWarning) when the frames of a stack do not line up: focus stacks against the
        middle frame, exposure brackets between neighbouring exposures (see
        :data:`fusionfm.alignment.MISREGISTRATION_SHARE`)."""
        threshold = misregistration_threshold(*frames[0].shape[-2:])
        if spec.family == "MFF":
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
                     if spec.family == "MFF" else
                     f"frames {min(reference, frame)} and {max(reference, frame)} (neighbouring exposures) are "
                     f"displaced by up to {worst:.0f} pixels against each other")
            warnings.warn(f"The frames do not line up: {where}. Fused as they are they leave ghosts; pass "
                          "align=True to register them first.", MisregistrationWarning, stacklevel=3)

    @staticmethod
    def _ordered_pair(frames: list[torch.Tensor], spec: FusionTask) -> tuple[torch.Tensor, torch.Tensor]:
        """Two frames as (a, b): for MEF the darker first (a is the under-exposed source), else as given."""
        if spec.family == "MEF" and luminance(frames[1][None]).mean() < luminance(frames[0][None]).mean():
            return frames[1], frames[0]
        return frames[0], frames[1]

    def _fuse_frames(self, tensors: list[torch.Tensor], spec: FusionTask, num_inference_steps: int,
                     processing_resolution: int | None, match_input_resolution: bool, batch_size: int,
                     compute_dtype, output_type: str, tile_size: int, detail_gain: float | None = None,
                     base_min_size: int = 0) -> torch.Tensor:
        """Fuse three or more canonical frames (C, H, W) of one size (:meth:`_check_frames`), or two for
        ``natural_exposure``: (C, H, W) in [0, 1].

        Each frame is scored against the stack's mean by the network (for MEF in the slot its exposure suits:
        a darker frame as the under-exposed source, a brighter one as the over-exposed), and the frames'
        pyramids are blended by a softmax of the scores (:func:`fusionfm.stacks.blend_stack`; for MEF the base
        level's brighter-than-the-mean prior gives way to a well-exposedness term, which also joins a softer
        activity prior on the detail levels). Frames larger than ``tile_size`` on a side are fused in overlapping
        tiles, as pairs are. ``base_min_size``: see :func:`fusionfm.stacks.blend_stack`.
        """
        if num_inference_steps != 1:
            raise ValueError(f"Stacks of more than two frames, and pairs with natural_exposure=True, are fused in one "
                             f"step; got num_inference_steps={num_inference_steps!r}.")
        height, width = self.image_processor.processing_size(tuple(tensors[0].shape[-2:]), processing_resolution)
        self._check_processing_size(tuple(tensors[0].shape[-2:]), processing_resolution, tile_size, what="a stack ",
                                    unit="megapixels per frame")
        dtype = self._resolve_compute_dtype(compute_dtype)
        luma = torch.cat([self.image_processor.resize(luminance(t[None]), (height, width)) for t in tensors])
        # Which slot each frame takes is decided once for the whole stack, so every tile agrees on it.
        brighter = torch.zeros(len(tensors), 1, 1, 1, dtype=torch.bool)
        if spec.family == "MEF":
            brighter = (luma.mean(dim=(1, 2, 3)) > luma.mean()).view(-1, 1, 1, 1)
        with self._call_lock, torch.no_grad():
            fused_y = fuse_in_tiles(
                lambda box: self._blend_frames(luma[..., box[0]:box[2], box[1]:box[3]], brighter, spec, batch_size,
                                               dtype, detail_gain, base_min_size),
                height, width, tile_size, tile_size // TILE_OVERLAP_DIVISOR)
        fused_y = fused_y.clamp(0.0, 1.0).cpu()
        originals = [t[None] for t in tensors]
        if match_input_resolution:
            fused_y = self.image_processor.resize(fused_y, tuple(tensors[0].shape[-2:]))
        else:
            originals = [self.image_processor.resize(t, (height, width)) for t in originals]
        fused_y = keep_shared_extremes(fused_y, [luminance(t) for t in originals])
        return recombine_frames(fused_y, originals)[0]

    def _blend_frames(self, luma: torch.Tensor, brighter: torch.Tensor, spec: FusionTask, batch_size: int,
                      dtype: torch.dtype, detail_gain: float | None = None, base_min_size: int = 0) -> torch.Tensor:
        """The stack blend of (N, 1, h, w) frame luminances (or one tile of them): (1, 1, h, w).

        ``brighter`` (N, 1, 1, 1) bool: MEF frames brighter than the stack, scored in the over-exposed slot.
        ``detail_gain``: every detail level's gain instead of the network's (see :meth:`__call__`).
        """
        device = self._execution_device
        luma, brighter = luma.to(device), brighter.to(device)
        multiple, margin = self.unet.size_multiple, self.image_processor.config.border_margin
        padded, box = self.image_processor.pad_to_multiple(luma, multiple, margin)
        reference = padded.mean(dim=0, keepdim=True).expand_as(padded)
        image_a = torch.where(brighter, reference, padded)
        image_b = torch.where(brighter, padded, reference)
        weights_dtype = self.unet.dtype
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != weights_dtype and dtype != torch.float32)
        exposure = spec.family == "MEF"
        gain_shift = None
        if exposure and self.unet.config.detail_gains is not None:
            levels = len(self.unet.config.detail_gains[spec.class_id])
            gain_shift = self.unet.gain_shift_to(spec.class_id, [MEF_STACK_DETAIL_GAINS] * levels)
        logits, gains = [], []
        for start in range(0, len(luma), batch_size):
            chunk = slice(start, start + batch_size)
            count = image_a[chunk].shape[0]
            x0 = self.scheduler.source_point(image_a[chunk], image_b[chunk], None)
            with autocast:
                chunk_logits, chunk_gains = self.unet.source_maps(
                    x0.to(weights_dtype), image_a[chunk].to(weights_dtype), image_b[chunk].to(weights_dtype),
                    torch.zeros(count, device=device),
                    torch.full((count,), spec.class_id, dtype=torch.long, device=device),
                    gain_shifts=None if gain_shift is None else gain_shift.expand(count, -1),
                    detail_gains=self._detail_gains(detail_gain, count, device))
            logits.append(chunk_logits.float())
            gains.append(chunk_gains.float())
        # The logit is the a-slot's weight: a frame in the b slot scores with its negative.
        logits = torch.where(brighter, -1.0, 1.0) * torch.cat(logits)
        activity_scales = self.unet.activity_scales_for(torch.tensor([spec.class_id], device=device))
        if activity_scales is not None:
            activity_scales = activity_scales[0].detach().clone()
            if exposure:  # an exposure stack's weights follow well-exposedness, not brightness, and detail less
                activity_scales[-1] = 0.0
                activity_scales[:-1] = MEF_DETAIL_STRENGTH
            elif bool(self.unet.sharper_base[spec.class_id]):  # stacks compare brightness only: mean base instead
                activity_scales[-1] = 0.0
        fused_y = blend_stack(padded.float(), logits, torch.cat(gains), activity_scales,
                              well_exposedness=MEF_WELL_EXPOSEDNESS if exposure else 0.0,
                              detail_well_exposedness=MEF_DETAIL_WELL_EXPOSEDNESS if exposure else 0.0,
                              base_min_size=base_min_size)
        return self.image_processor.crop(check_finite(fused_y), box)

    # ------------------------------------------------------------------ steps of a call
    def _prepare_pair(
        self, image_a: torch.Tensor, image_b: torch.Tensor, task: FusionTask, processing_resolution: int | None
    ) -> _PreparedPair:
        size = self.image_processor.processing_size(tuple(image_a.shape[-2:]), processing_resolution)
        y_a = self.image_processor.resize(luminance(image_a[None]), size)[0]
        y_b = self.image_processor.resize(luminance(image_b[None]), size)[0]
        return _PreparedPair(image_a, image_b, y_a, y_b, task)

    @staticmethod
    def _batches(pairs: list[_PreparedPair], batch_size: int) -> list[list[int]]:
        """Indices of pairs, grouped by processing size, in chunks of ``batch_size``."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, pair in enumerate(pairs):
            by_size[tuple(pair.y_a.shape[-2:])].append(index)
        return [group[i : i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]

    def _fuse_luminance(
        self, pairs: list[_PreparedPair], generator: torch.Generator | None, dtype: torch.dtype,
        num_inference_steps: int, tile_size: int, detail_gain: float | None = None,
    ) -> torch.Tensor:
        """Fuse one batch of same-size pairs: (B, 1, h, w) fused Y in [0, 1]; in overlapping tiles of
        ``tile_size`` pixels (0: never) when the pairs are larger, blended with feathered weights."""
        y_a = torch.stack([p.y_a for p in pairs])
        y_b = torch.stack([p.y_b for p in pairs])
        task_ids = torch.tensor([p.task.class_id for p in pairs], dtype=torch.long)
        gain_shifts = self.unet.gain_shifts_for([p.task.name for p in pairs])  # variants' starts (MIF-CT, ...)
        detail_gains = self._detail_gains(detail_gain, len(pairs), torch.device("cpu"))
        # The whole sources' mean levels, so that every tile measures salience (a "salient" base prior) alike.
        source_means = mean_levels(y_a, y_b)
        height, width = y_a.shape[-2:]
        return fuse_in_tiles(lambda box: self._integrate(y_a[..., box[0]:box[2], box[1]:box[3]],
                                                         y_b[..., box[0]:box[2], box[1]:box[3]], task_ids,
                                                         source_means, gain_shifts, detail_gains, generator,
                                                         dtype, num_inference_steps),
                             height, width, tile_size, tile_size // TILE_OVERLAP_DIVISOR)

    def _integrate(self, y_a: torch.Tensor, y_b: torch.Tensor, task_ids: torch.Tensor, source_means: torch.Tensor,
                   gain_shifts: torch.Tensor | None, detail_gains: torch.Tensor | None,
                   generator: torch.Generator | None, dtype: torch.dtype, num_inference_steps: int) -> torch.Tensor:
        """Integrate the flow from the coupling of (B, 1, h, w) sources (whole-image means (B, 2); the task
        variants' gain shifts (B, L - 1) or None; the caller's detail gains (B, L - 1) or None): (B, 1, h, w) in
        [0, 1], on the CPU."""
        device = self._execution_device
        multiple, margin = self.unet.size_multiple, self.image_processor.config.border_margin
        y_a, box = self.image_processor.pad_to_multiple(y_a.to(device), multiple, margin)
        y_b, _ = self.image_processor.pad_to_multiple(y_b.to(device), multiple, margin)
        task_ids, source_means = task_ids.to(device), source_means.to(device)
        gain_shifts = None if gain_shifts is None else gain_shifts.to(device)
        detail_gains = None if detail_gains is None else detail_gains.to(device)
        compiled = self._compiled_unet
        unet = compiled.module if compiled is not None and compiled.dtype == dtype else self.unet
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = self.scheduler.source_point(y_a, y_b, generator)
        for t in self.scheduler.timesteps:
            velocity = self._run_unet(unet, dtype, x, y_a, y_b, t.expand(len(task_ids)).to(device), task_ids,
                                      source_means, gain_shifts, detail_gains)
            x = self.scheduler.step(velocity.float(), t, x).prev_sample
        return self.image_processor.crop(check_finite(x), box).clamp(0.0, 1.0).cpu()

    def _run_unet(self, unet: torch.nn.Module, dtype: torch.dtype, x: torch.Tensor, y_a: torch.Tensor,
                  y_b: torch.Tensor, t: torch.Tensor, task_ids: torch.Tensor, source_means: torch.Tensor,
                  gain_shifts: torch.Tensor | None = None, detail_gains: torch.Tensor | None = None) -> torch.Tensor:
        """One velocity evaluation in ``dtype`` (autocast when the weights are in another precision)."""
        weights_dtype = self.unet.dtype
        enabled = dtype != weights_dtype and dtype != torch.float32
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
            return unet(x.to(weights_dtype), y_a.to(weights_dtype), y_b.to(weights_dtype), t, task_ids,
                        source_means=source_means, gain_shifts=gain_shifts, detail_gains=detail_gains)

    def _finish_pair(self, pair: _PreparedPair, fused_y: torch.Tensor, match_input_resolution: bool) -> torch.Tensor:
        """Resize the fused luminance, finish it against the sources (:mod:`fusionfm.finishing`) and put colour back:
        (C, H, W) in [0, 1]."""
        image_a, image_b = pair.image_a[None], pair.image_b[None]
        if match_input_resolution:
            fused_y = self.image_processor.resize(fused_y[None], tuple(image_a.shape[-2:]))
        else:
            fused_y = fused_y[None]
            image_a = self.image_processor.resize(image_a, tuple(fused_y.shape[-2:]))
            image_b = self.image_processor.resize(image_b, tuple(fused_y.shape[-2:]))
        y_a, y_b = luminance(image_a), luminance(image_b)
        if pair.task.black_is_empty:
            fused_y = favour_the_lit_source(fused_y, y_a, y_b)
        fused_y = keep_shared_extremes(fused_y, [y_a, y_b])
        return recombine(fused_y, image_a, image_b, pair.task.color_policy)[0]

    def check_detail_gain(self, detail_gain: float | None) -> None:
        """Raise a ValueError unless ``detail_gain`` is None or a gain this model's head can apply."""
        if detail_gain is None:
            return
        if self.unet.config.output_head != "pyramid":
            raise ValueError(f"detail_gain needs a model with the pyramid output head; this one has the "
                             f"{self.unet.config.output_head!r} head. Leave detail_gain None.")
        max_gain = self.unet.config.max_gain
        if (isinstance(detail_gain, (bool, np.bool_)) or not isinstance(detail_gain, numbers.Real)
                or not 1 / max_gain <= detail_gain <= max_gain):
            raise ValueError(f"detail_gain must be None (the model's own) or a number from {1 / max_gain:g} to "
                             f"{max_gain:g} (1: the sources' own contrast), got {detail_gain!r}.")

    @staticmethod
    def check_natural_exposure(natural_exposure: bool, task) -> None:
        """Raise a ValueError unless ``natural_exposure`` is a bool, and True only for exposure (MEF) fusions."""
        if not isinstance(natural_exposure, (bool, np.bool_)):
            raise ValueError(f"natural_exposure must be True or False, got {natural_exposure!r}.")
        tasks = task if isinstance(task, (list, tuple)) else [task]
        if natural_exposure and any(get_task(name).family != "MEF" for name in tasks):
            raise ValueError("natural_exposure blends exposures by how well exposed they are: it applies to "
                             "multi-exposure fusion (task 'MEF') only.")

    def _detail_gains(self, detail_gain: float | None, count: int, device: torch.device) -> torch.Tensor | None:
        """``detail_gain`` for every detail level of ``count`` items: (count, L - 1) float32, or None."""
        if detail_gain is None:
            return None
        return torch.full((count, self.unet.config.pyramid_levels - 1), float(detail_gain), device=device)

    def _resolve_compute_dtype(self, compute_dtype: torch.dtype | str | None) -> torch.dtype:
        """The dtype to run the U-Net in: ``compute_dtype``, else the config's ``default_compute_dtype``."""
        device = self._execution_device
        if compute_dtype is None:
            compute_dtype = self.config.get("default_compute_dtype", "auto")
        if compute_dtype == "auto":
            if self.unet.dtype != torch.float32:
                dtype = self.unet.dtype
            elif device.type == "cpu":
                dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
            elif device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                dtype = torch.float32
        elif isinstance(compute_dtype, torch.dtype):
            dtype = compute_dtype
        elif isinstance(compute_dtype, str) and compute_dtype.lower() in _DTYPE_NAMES:
            dtype = _DTYPE_NAMES[compute_dtype.lower()]
        else:
            raise ValueError(
                f"compute_dtype must be None, 'auto', 'fp32', 'bf16', 'fp16' or a torch dtype, got {compute_dtype!r}."
            )
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"compute_dtype {dtype} is not a floating-point type FusionFM can run in.")
        if dtype == torch.float16 and device.type == "cpu":
            # fp16 autocast on CPU overflows in the U-Net and returns all-NaN (black) images.
            raise ValueError("compute_dtype fp16 is not supported on the CPU (the result would be NaN); "
                             "use 'bf16' (fast on CPUs with native bf16) or 'fp32'.")
        return dtype


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
