"""FusionFMPipeline: fuse two registered images (or a stack of frames) in one flow-matching step."""

from __future__ import annotations

import numbers
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .alignment import align_frames, warn_if_misregistered
from .arguments import (
    DTYPE_NAMES,
    NonFiniteResultError,
    check_finite,
    check_flag,
    check_tile_size,
    resolve_compute_dtype,
    whole_number,
)
from .color import luminance, recombine, recombine_frames
from .compilation import CompiledUNet, compile_unet
from .finishing import favour_the_lit_source, keep_shared_extremes
from .hub import DOWNLOAD_KWARGS, default_model, resolve_pipeline_path
from .image_processor import FusionImageProcessor, OutputType, PipelineImageInput, SizeMismatchError
from .pyramid import mean_levels
from .scheduler import FlowMatchFusionScheduler
from .stacks import MAX_FRAMES, MEF_PAIR_BASE_MIN_SIZE, fuse_stack
from .tasks import FusionTask, get_task
from .tiling import TILE_OVERLAP_DIVISOR, fuse_in_tiles
from .unet import FusionUNet

__all__ = ["FusionFMPipeline", "FusionFMPipelineOutput", "NonFiniteResultError", "SizeMismatchError"]
OUTPUT_TYPES = ("pil", "np", "pt")
STACK_FAMILIES = ("MEF", "MFF")

MAX_UNTILED_PIXELS = 16_000_000
"""Above this many processing pixels a call must be tiled (the network's memory grows with the pixels it sees)."""

IMAGE_PROCESSOR_FOLDER = "image_processor"


@dataclass
class FusionFMPipelineOutput(BaseOutput):
    """Output of :class:`FusionFMPipeline`.

    Args:
        images: fused images in the input pairs' order: a list of PIL images (mode L or RGB), a numpy
            array (B, H, W, C) or a tensor (B, C, H, W) in [0, 1]. C is 1 when every result is gray.
            Results of different sizes come back as a list for ``np``/``pt``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list


@dataclass
class _Fusion:
    """One fusion of a call: canonical (C, H, W) frames (a pair: a, b), task, luminance at the processing size."""

    frames: list[torch.Tensor]
    task: FusionTask
    luma: torch.Tensor  # (N, 1, h, w)
    blend: bool  # fused by the stack blend (stacks of three or more, natural_exposure), else as a pair


class FusionFMPipeline(DiffusionPipeline):
    """Fuses image pairs (IVF, MIF, MEF, MFF) and exposure or focus stacks with a one-step flow-matching U-Net.

    The U-Net predicts the velocity of a straight flow from x0 = coupling(a, b) to the fused luminance; the scheduler
    integrates it (one Euler step by default). Where every source is black (white), so is the fused luminance, and for
    scans (MIF) the fusion moves to the other source where one is black all around (:mod:`fusionfm.finishing`).
    Colour is put back from the inputs according to the task (docs/design.md, "Colour").

    Precision: ``default_compute_dtype`` (in ``pipe.config``) is ``"auto"``: bf16 autocast where the device runs it
    natively (a CPU with AVX512-BF16 or AMX, a GPU with bf16), fp32 elsewhere; ``from_pretrained`` then gives CPU
    weights a channels-last layout, once. Pass ``compute_dtype="fp32"`` to a call for full precision.

    Args:
        unet: the velocity network.
        scheduler: the flow-matching scheduler (coupling and time grid).
        image_processor: input canonicalisation and output conversion (its settings save with the pipeline).
        default_num_inference_steps: steps used when the call does not say (1).
        default_processing_resolution: long edge to process at when the call does not say (None: the input's).
        default_compute_dtype: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``: the U-Net's precision by default.
        max_num_inference_steps: calls asking for more steps are refused before any work (one step is what the model
            is trained for).
        max_processing_pixels: calls whose processing size has more pixels than this are refused before any work.
        default_tile_size: images larger than this on a side are fused in overlapping tiles of this many pixels
            (blended with feathered weights), so the network's memory stays that of one tile. 0 turns tiling off;
            untiled calls are then limited to :data:`MAX_UNTILED_PIXELS`. Raise a cap or change the tile size at
            load, ``from_pretrained(..., max_processing_pixels=...)``, or with ``pipe.register_to_config(...)``.
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
        if default_compute_dtype != "auto" and default_compute_dtype not in DTYPE_NAMES:
            raise ValueError(f"default_compute_dtype must be 'auto' or one of {', '.join(DTYPE_NAMES)}, "
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
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None,
                        **kwargs) -> FusionFMPipeline:
        """Load from a local folder or a Hub repo id (downloaded first; cache and offline mode honoured).

        Without a name: ``$FUSIONFM_MODEL`` if set, else the bundled model. Safetensors weights only. Hub keyword
        arguments (``revision``, ``cache_dir``, ``token``, ``local_files_only``...) go to the Hub, others to diffusers.
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
            # oneDNN's bf16 convolutions are fastest on channels-last weights.
            pipeline.unet.to(memory_format=torch.channels_last)
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (safetensors), plus the image processor's config."""
        super().save_pretrained(save_directory, **kwargs)
        self.image_processor.save_config(os.path.join(save_directory, IMAGE_PROCESSOR_FOLDER))

    def compile_unet(self, compute_dtype: torch.dtype | str | None = None, cache_dir: str | os.PathLike | None = None,
                     warm_up_size: tuple[int, int] | None = (480, 640)) -> None:
        """Serve calls in ``compute_dtype`` (default: the pipeline's) with the U-Net compiled by ``torch.compile``.

        Compiles at once on a ``warm_up_size`` (height, width) input, then swaps the compiled network in; calls made
        meanwhile from other threads run eager. Later processes load the compilation from ``cache_dir`` (default
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
        compiled = self._compiled_unet  # one read: another thread may disable it meanwhile
        return compiled.dtype if compiled is not None else None

    @property
    def min_processing_side(self) -> int:
        """The smallest side (pixels) a call may shrink images to: the U-Net's size multiple (its patch times its
        halvings) or the 2^(levels - 1) pixels its pyramid's coarsest level needs, whichever is larger. Images already
        smaller are fused at their own size (padded)."""
        return max(self.unet.size_multiple, 2 ** (self.unet.config.pyramid_levels - 1))

    # ------------------------------------------------------------------ validation
    def check_options(self, task, num_inference_steps, processing_resolution, batch_size, output_type, tile_size,
                      detail_gain, natural_exposure, compute_dtype) -> tuple[int, int, int, int]:
        """Validate a call's options before any work, with a message that says what is wrong and what to pass. Whole
        numbers may be Python, numpy or 0-d torch integers; they come back as ints: (num_inference_steps,
        processing_resolution (0: the input's size), batch_size, tile_size)."""
        steps = whole_number(num_inference_steps, "num_inference_steps", 1)
        if steps > self.config.max_num_inference_steps:
            raise ValueError(
                f"num_inference_steps={steps} is above this pipeline's cap of {self.config.max_num_inference_steps} "
                "(the model is trained for one step; time grows linearly with steps). Use fewer steps, or raise the "
                "cap: pipe.register_to_config(max_num_inference_steps=N).")
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
        tasks = [get_task(name) for name in (task if isinstance(task, (list, tuple)) else [task])]
        self.check_detail_gain(detail_gain)
        if check_flag(natural_exposure, "natural_exposure") and any(spec.family != "MEF" for spec in tasks):
            raise ValueError("natural_exposure blends exposures by how well exposed they are: it applies to "
                             "multi-exposure fusion (task 'MEF') only.")
        if self.unet.dtype == torch.float16 and self._execution_device.type == "cpu":
            raise ValueError(
                "The U-Net's weights are float16, which the CPU cannot compute with (the fused image would be NaN). "
                "Move them back to float32 with pipe.to(torch.float32) (or load without dtype=torch.float16); "
                "bf16 runs natively on CPUs with AVX512-BF16: pass compute_dtype='bf16' to a call instead.")
        self._resolve_compute_dtype(compute_dtype)
        return steps, resolution, batch, tile

    def check_detail_gain(self, detail_gain: float | None) -> None:
        """Raise a ValueError unless ``detail_gain`` is None or a gain this model's head can apply."""
        if detail_gain is None:
            return
        max_gain = self.unet.config.max_gain
        if (isinstance(detail_gain, (bool, np.bool_)) or not isinstance(detail_gain, numbers.Real)
                or not 1 / max_gain <= detail_gain <= max_gain):
            raise ValueError(f"detail_gain must be None (the model's own) or a number from {1 / max_gain:g} to "
                             f"{max_gain:g} (1: the sources' own contrast), got {detail_gain!r}.")

    def check_inputs(self, image_a, image_b, task, align: bool) -> None:
        """Validate the images' arrangement and the task(s) for it, before any image is read: a pair per item of
        ``image_a`` and ``image_b``, or (MEF, MFF) one stack of 2 to MAX_FRAMES frames listed in ``image_a``."""
        if image_a is None or (image_b is None and not isinstance(image_a, (list, tuple))):
            raise ValueError("Both image_a and image_b are required (or, for MEF and MFF, a list of frames as "
                             "image_a).")
        if image_b is None:
            if isinstance(task, (list, tuple)):
                raise ValueError("A stack of frames is one fusion: pass one task, 'MEF' or 'MFF'.")
            spec = get_task(task)
            if spec.family not in STACK_FAMILIES:
                raise ValueError(f"{spec.name} fuses exactly two images: pass image_a and image_b. Stacks of more "
                                 "than two frames are for MEF (exposure brackets) and MFF (focus stacks).")
            if not 2 <= len(image_a) <= MAX_FRAMES:
                raise ValueError(f"A stack needs 2 to {MAX_FRAMES} frames, got {len(image_a)}.")
        elif isinstance(image_a, (list, tuple)) != isinstance(image_b, (list, tuple)):
            raise ValueError("Pass image_a and image_b both as single images or both as lists of the same length.")
        if align and image_b is not None and (isinstance(image_a, (list, tuple)) or isinstance(task, (list, tuple))
                                              or get_task(task).family not in STACK_FAMILIES):
            raise ValueError("align=True registers the frames of one exposure or focus pair or stack (MEF, MFF): "
                             "pass one pair, or a list of frames as image_a.")

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
                f"pipeline's cap of {self.config.max_processing_pixels / 1e6:g}. Pass a smaller processing_resolution "
                "(e.g. 2048), or raise the cap: pipe.register_to_config(max_processing_pixels=N).")
        network_pixels = min(height, tile_size or height) * min(width, tile_size or width)
        if network_pixels > MAX_UNTILED_PIXELS:
            raise ValueError(f"Fusing {what}at {height}x{width} pixels{where} in one piece (tile_size={tile_size}) "
                             f"needs the network on {network_pixels / 1e6:.1f} megapixels at once, above "
                             f"{MAX_UNTILED_PIXELS / 1e6:g} (about 0.3-0.4 GB of memory per megapixel). Use tiles, "
                             "e.g. tile_size=1024.")

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
            image_a, image_b: the two sources (see :mod:`fusionfm.image_processor` for accepted types); for IVF a is
                infrared and b visible, for MIF a is MRI and b CT/PET/SPECT, for MEF a is under- and b over-exposed,
                for MFF a is near- and b far-focused. Lists (or batches) of the same length fuse pair by pair. For
                MEF and MFF, ``image_a`` may instead be a list of 2 to 64 frames of one scene (an exposure bracket or
                focus stack, any order) with ``image_b`` None: one fused image (:mod:`fusionfm.stacks`).
            task: a task name (``"IVF"``, ``"MIF-PET"``, ``"MEF"``, ...; any case) or one per pair.
            num_inference_steps: Euler steps (default: the pipeline config, 1). Stacks take one.
            processing_resolution: long edge in pixels to fuse at; None uses the config default, 0 the input's size.
            match_input_resolution: resize the result back to the input size (else keep the processing size).
            resize_b_to_a: resize image_b (every frame of a stack) to the first image's size instead of refusing
                different sizes.
            batch_size: pairs (or frames) per network call.
            generator: random generator for the ``gaussian`` coupling.
            compute_dtype: ``"auto"``, ``"bf16"``, ``"fp32"``, ``"fp16"`` or a torch dtype; None uses the config's.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            tile_size: fuse images larger than this on a side in overlapping tiles of this size (None: the config's
                ``default_tile_size``; 0: in one piece), so memory is bounded by the tile.
            align: MEF and MFF: register the frames (image_b to image_a, a stack's to its middle frame) with a
                similarity transform first (:mod:`fusionfm.alignment`). Without it, a stack whose frames do not line
                up is fused as it is, with a :class:`fusionfm.alignment.MisregistrationWarning`.
            detail_gain: the contrast gain of every detail level (the network still chooses which source each detail
                comes from). None: the model's own, per task and learned; 1: the sources' own contrast; between
                1 / max_gain and max_gain of the model.
            natural_exposure: MEF only: blend the two exposures as stacks of three or more are, by well-exposedness
                (Mertens et al.), so skies and highlights keep their tones.
            show_progress_bar: show a progress bar over batches.
            return_dict: return a :class:`FusionFMPipelineOutput` rather than a tuple.
        """
        if num_inference_steps is None:
            num_inference_steps = self.config.default_num_inference_steps
        if processing_resolution is None:
            processing_resolution = self.config.default_processing_resolution
        if tile_size is None:
            tile_size = self.config.get("default_tile_size", 0)
        steps, resolution, batch_size, tile_size = self.check_options(
            task, num_inference_steps, processing_resolution, batch_size, output_type, tile_size, detail_gain,
            natural_exposure, compute_dtype)
        self.check_inputs(image_a, image_b, task, align)
        if steps != 1 and (natural_exposure or (image_b is None and len(image_a) > 2)):
            raise ValueError(f"Stacks of more than two frames, and pairs with natural_exposure=True, are fused in one "
                             f"step; got num_inference_steps={steps}.")
        fusions = self._prepare(image_a, image_b, task, resize_b_to_a, align, resolution, tile_size, natural_exposure)
        dtype = self._resolve_compute_dtype(compute_dtype)
        with self._call_lock:
            fused_y = self._fuse_luminance(fusions, generator, dtype, steps, tile_size, detail_gain, batch_size,
                                           show_progress_bar)
        results = [self._finish(fusion, y, match_input_resolution) for fusion, y in zip(fusions, fused_y, strict=True)]
        images = self.image_processor.postprocess(results, output_type)
        self.maybe_free_model_hooks()
        return FusionFMPipelineOutput(images=images) if return_dict else (images,)

    # ------------------------------------------------------------------ steps of a call
    def _prepare(self, image_a, image_b, task, resize_b_to_a: bool, align: bool, resolution: int, tile_size: int,
                 natural_exposure: bool) -> list[_Fusion]:
        """The call's fusions: canonical frames, registered when asked (a stack otherwise checked for ghosts), a
        two-frame stack ordered as a pair, and their luminance at the processing size."""
        frame_lists = self.image_processor.preprocess(image_a, image_b, resize_b_to_a)
        if isinstance(task, (list, tuple)) and len(task) != len(frame_lists):
            raise ValueError(f"Got {len(task)} tasks for {len(frame_lists)} pairs; pass one task or one per pair.")
        tasks = [get_task(name) for name in task] if isinstance(task, (list, tuple)) else [get_task(task)] * len(
            frame_lists)
        fusions = []
        for index, (frames, spec) in enumerate(zip(frame_lists, tasks, strict=True)):
            where = f" (pair {index})" if len(frame_lists) > 1 else ""
            stack = image_b is None
            self._check_processing_size(tuple(frames[0].shape[-2:]), resolution, tile_size,
                                        what="a stack " if stack else "", where=where,
                                        unit="megapixels per frame" if stack else "megapixels")
            if align:
                frames = align_frames(frames if stack else frames[::-1])[0]  # the middle frame (of two, b) stays
                frames = frames if stack else frames[::-1]
            elif stack:
                warn_if_misregistered(frames, spec.family)
            blend = len(frames) > 2 or natural_exposure
            if not blend and spec.family == "MEF" and luminance(frames[1][None]).mean() < luminance(
                    frames[0][None]).mean():
                frames = frames[::-1]  # the darker frame is the under-exposed source, a
            size = self.image_processor.processing_size(tuple(frames[0].shape[-2:]), resolution)
            luma = torch.cat([self.image_processor.resize(luminance(frame[None]), size) for frame in frames])
            fusions.append(_Fusion(list(frames), spec, luma, blend))
        return fusions

    def _fuse_luminance(self, fusions: list[_Fusion], generator: torch.Generator | None, dtype: torch.dtype,
                        steps: int, tile_size: int, detail_gain: float | None, batch_size: int,
                        show_progress_bar: bool) -> list[torch.Tensor]:
        """Each fusion's fused luminance (1, 1, h, w) in [0, 1] at its processing size: pairs in batches of one size
        through the flow, stacks through the stack blend."""
        fused_y: dict[int, torch.Tensor] = {}
        gains = self._detail_gains(detail_gain, 1)
        margin = self.image_processor.config.border_margin
        for index, fusion in enumerate(fusions):
            if fusion.blend:
                base_min_size = MEF_PAIR_BASE_MIN_SIZE if len(fusion.frames) == 2 else 0
                fused = fuse_stack(self.unet, self.scheduler, fusion.luma, fusion.task, dtype, batch_size, gains,
                                   tile_size, margin, base_min_size)
                fused_y[index] = check_finite(fused).clamp(0.0, 1.0)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, fusion in enumerate(fusions):
            if not fusion.blend:
                by_size[tuple(fusion.luma.shape[-2:])].append(index)
        batches = [group[i : i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]
        for indices in self.progress_bar(batches) if show_progress_bar else batches:
            pairs = [fusions[i] for i in indices]
            fused = self._fuse_pairs(pairs, generator, dtype, steps, tile_size, detail_gain)
            fused_y.update(zip(indices, fused.split(1), strict=True))
        return [fused_y[index] for index in range(len(fusions))]

    def _fuse_pairs(self, pairs: list[_Fusion], generator: torch.Generator | None, dtype: torch.dtype, steps: int,
                    tile_size: int, detail_gain: float | None) -> torch.Tensor:
        """One batch of same-size pairs: (B, 1, h, w) fused luminance in [0, 1]; in overlapping tiles of
        ``tile_size`` pixels (0: never) when the pairs are larger, blended with feathered weights."""
        y_a = torch.stack([pair.luma[0] for pair in pairs])
        y_b = torch.stack([pair.luma[1] for pair in pairs])
        task_ids = torch.tensor([pair.task.class_id for pair in pairs], dtype=torch.long)
        gain_shifts = self.unet.gain_shifts_for([pair.task.name for pair in pairs])  # variants' starts
        detail_gains = self._detail_gains(detail_gain, len(pairs))
        # The whole sources' mean levels, so that every tile measures salience (a "salient" base prior) alike.
        source_means = mean_levels(y_a, y_b)
        height, width = y_a.shape[-2:]

        def integrate_tile(box: tuple[int, int, int, int]) -> torch.Tensor:
            return self._integrate(y_a[..., box[0]:box[2], box[1]:box[3]], y_b[..., box[0]:box[2], box[1]:box[3]],
                                   task_ids, source_means, gain_shifts, detail_gains, generator, dtype, steps)

        return fuse_in_tiles(integrate_tile, height, width, tile_size, tile_size // TILE_OVERLAP_DIVISOR)

    def _integrate(self, y_a: torch.Tensor, y_b: torch.Tensor, task_ids: torch.Tensor, source_means: torch.Tensor,
                   gain_shifts: torch.Tensor | None, detail_gains: torch.Tensor | None,
                   generator: torch.Generator | None, dtype: torch.dtype, steps: int) -> torch.Tensor:
        """Integrate the flow from the coupling of (B, 1, h, w) sources: (B, 1, h, w) in [0, 1], on the CPU."""
        device = self._execution_device
        multiple, margin = self.unet.size_multiple, self.image_processor.config.border_margin
        y_a, box = self.image_processor.pad_to_multiple(y_a.to(device), multiple, margin)
        y_b, _ = self.image_processor.pad_to_multiple(y_b.to(device), multiple, margin)
        extras = [None if value is None else value.to(device) for value in (source_means, gain_shifts, detail_gains)]
        compiled = self._compiled_unet
        unet = compiled.module if compiled is not None and compiled.dtype == dtype else self.unet
        self.scheduler.set_timesteps(steps, device=device)
        x = self.scheduler.source_point(y_a, y_b, generator)
        for t in self.scheduler.timesteps:
            velocity = self._run_unet(unet, dtype, x, y_a, y_b, t.expand(len(task_ids)).to(device),
                                      task_ids.to(device), *extras)
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

    def _finish(self, fusion: _Fusion, fused_y: torch.Tensor, match_input_resolution: bool) -> torch.Tensor:
        """Resize the fused luminance (1, 1, h, w), finish it against the sources (:mod:`fusionfm.finishing`) and put
        colour back: (C, H, W) in [0, 1]."""
        frames = [frame[None] for frame in fusion.frames]
        if match_input_resolution:
            fused_y = self.image_processor.resize(fused_y, tuple(frames[0].shape[-2:]))
        else:
            frames = [self.image_processor.resize(frame, tuple(fused_y.shape[-2:])) for frame in frames]
        sources_y = [luminance(frame) for frame in frames]
        if fusion.blend:
            return recombine_frames(keep_shared_extremes(fused_y, sources_y), frames)[0]
        if fusion.task.black_is_empty:
            fused_y = favour_the_lit_source(fused_y, *sources_y)
        fused_y = keep_shared_extremes(fused_y, sources_y)
        return recombine(fused_y, frames[0], frames[1], fusion.task.color_policy)[0]

    def _detail_gains(self, detail_gain: float | None, count: int) -> torch.Tensor | None:
        """``detail_gain`` for every detail level of ``count`` items: (count, L - 1) float32, or None."""
        if detail_gain is None:
            return None
        return torch.full((count, self.unet.config.pyramid_levels - 1), float(detail_gain))

    def _resolve_compute_dtype(self, compute_dtype: torch.dtype | str | None) -> torch.dtype:
        """The dtype to run the U-Net in: ``compute_dtype``, else the config's ``default_compute_dtype``."""
        if compute_dtype is None:
            compute_dtype = self.config.get("default_compute_dtype", "auto")
        return resolve_compute_dtype(compute_dtype, self.unet.dtype, self._execution_device)
