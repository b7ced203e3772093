"""FusionFM web app: upload two registered images, pick the task, download the fused image.

    python app.py                       # http://127.0.0.1:7860, the model bundled in fusionfm/default_model/
    python app.py --model DIR_OR_HUB_ID --host 0.0.0.0 --port 8080

Settings (flag, else environment variable, else default): --model / FUSIONFM_MODEL (the bundled model),
--host / FUSIONFM_HOST (127.0.0.1), --port / FUSIONFM_PORT (7860), --max-side / FUSIONFM_MAX_SIDE (2048:
larger images are fused downscaled, with a notice), --concurrency / FUSIONFM_CONCURRENCY (2 fusions at a
time; the rest wait in the queue), --share (a public gradio.live link; off by default).

The API endpoint ``/fuse`` takes (task, image_a, image_b, num_inference_steps, processing_resolution,
resize_b_to_a) and returns (fused PNG, before/after pair, metrics table, timing text, PNG file).
--compile / FUSIONFM_COMPILE=1 compiles the U-Net in the background (fusionfm.compilation); eager until ready.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import PIL.Image
import torch

from fusionfm import FusionFMPipeline, FusionInputWarning, get_task, load_image
from fusionfm.evaluation.baseline import average_255
from fusionfm.evaluation.mef_ssim import mef_ssim
from fusionfm.evaluation.metrics import average_gradient, entropy, fusion_metrics, spatial_frequency, to_gray_255
from fusionfm.image_processor import FusionImageProcessor, ImageTooLargeError, to_pil
from fusionfm.pipeline_fusionfm import SizeMismatchError

# The app shows these notices to the visitor itself (FusionImageProcessor.input_notices), not in the server log.
warnings.filterwarnings("ignore", category=FusionInputWarning)

logger = logging.getLogger("fusionfm.app")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TASK_CHOICES = [("Infrared + visible (IVF)", "IVF"), ("MRI + CT (MIF)", "MIF-CT"), ("MRI + PET (MIF)", "MIF-PET"),
                ("MRI + SPECT (MIF)", "MIF-SPECT"), ("Multi-exposure (MEF)", "MEF"), ("Multi-focus (MFF)", "MFF")]
SHOWN_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
METRICS_MAX_SIDE = 512  # metrics of larger results are computed on a copy downscaled to this long side
MAX_STEPS = 8  # the steps slider's range; the model is trained for one step
# zlib level 1: PNG encoding at the default level took 130 ms per 640x480 image, three per answer, more than the
# fusion itself; level 1 is several times faster for files about a third larger.
PNG_COMPRESS_LEVEL = 1
MAX_FRAMES = 16  # frames of one exposure bracket or focus stack
STACK_TASKS = ("MEF", "MFF")


class UploadedImage(gr.Image):
    """An image input that hands the uploaded file over untouched, so 16-bit and gray images keep their
    mode; FusionFM's own loader then reads and validates it (with messages a visitor can act on)."""

    is_template = True  # Gradio then serves gr.Image's front end for it (as for its own templates)

    def preprocess(self, payload):
        if payload is not None and payload.path:
            return payload.path
        return super().preprocess(payload)


class SettingSlider(gr.Slider):
    """A slider whose API values reach the app as sent: the app checks them (:func:`whole_number`) and answers
    with a message a visitor can act on, where Gradio's own check answers None or text with an opaque error
    and logs a stack trace for out-of-range numbers."""

    is_template = True

    def preprocess(self, payload):
        return payload


class TaskSelector(gr.Radio):
    """The task choice; API values reach the app as sent, which names the known tasks (Gradio's own check
    logs a stack trace for an unknown one)."""

    is_template = True

    def preprocess(self, payload):
        return payload


# ---------------------------------------------------------------------------------------------- helpers
def visitor_error(message: str, title: str = "Error") -> gr.Error:
    """A message for the visitor that stays on the page until closed (no stack trace in the page or the log)."""
    return gr.Error(message, title=title, duration=None, print_exception=False)


@contextlib.contextmanager
def failures_explained(what: str, size_mismatch: str | None = None) -> Iterator[None]:
    """Turn every failure of a fusion of ``what`` ("images", "frames") into a message for the visitor: the
    library's ValueError/TypeError as it is (``size_mismatch`` instead for different sizes), anything else as an
    unexpected failure whose stack trace goes to the log only."""
    try:
        yield
    except SizeMismatchError as error:
        raise visitor_error(size_mismatch or str(error), title="Different sizes") from error
    except (ValueError, TypeError) as error:
        raise visitor_error(str(error), title=f"Cannot fuse these {what}") from error
    except Exception as error:
        logger.exception("Fusion failed")
        raise visitor_error(f"Fusion failed unexpectedly ({type(error).__name__}). Please try other {what} or "
                            "report the problem.", title="Fusion failed") from error


def whole_number(value, name: str, low: int, high: int) -> int:
    """A numeric setting from the page or the API as an int in [low, high], else a gr.Error naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise visitor_error(f"{name} must be a whole number from {low} to {high}, got {value!r}.", "Bad setting")
    if not low <= int(value) <= high:
        raise visitor_error(f"{name} must be from {low} to {high}, got {int(value)}.", "Bad setting")
    return int(value)


def true_or_false(value, name: str) -> bool:
    """A checkbox setting from the page or the API as a bool, else a gr.Error naming it."""
    if not isinstance(value, bool):
        raise visitor_error(f"{name} must be true or false, got {value!r}.", "Bad setting")
    return value


KEPT_CONTRAST = ", the sources' own contrast"  # in the timing line when the contrast box is ticked
NATURAL_EXPOSURE = ", natural exposure"  # likewise for an exposure pair blended by well-exposedness


def contrast_setting(keep_contrast) -> float | None:
    """The pipeline's ``detail_gain`` for the page's contrast box: 1 (the sources' own contrast) when ticked,
    else None (the model's own gains, which sharpen); a gr.Error for anything but true or false."""
    return 1.0 if true_or_false(keep_contrast, "keep_contrast") else None


def exposure_setting(natural_exposure, spec) -> bool:
    """The pipeline's ``natural_exposure`` for the page's exposure box: as ticked for MEF, False for the other
    tasks (the box's label names MEF); a gr.Error for anything but true or false."""
    return true_or_false(natural_exposure, "natural_exposure") and spec.family == "MEF"


def input_labels(task: str) -> tuple[str, str]:
    spec = get_task(task)
    return spec.label_a, spec.label_b


def read_upload(path: str | None, role: str, max_pixels: int) -> PIL.Image.Image:
    """Open one upload (refused from its header if it has more than ``max_pixels``); every problem becomes a
    gr.Error naming the input (``role``)."""
    if not path:
        raise visitor_error(f"The {role} image is missing: upload it (or pick an example below).", "Missing image")
    try:
        image = load_image(path, max_pixels=max_pixels)
    except ImageTooLargeError as error:
        raise visitor_error(f"The {role} image is too large for this app: {error}", "Image too large") from error
    except (ValueError, FileNotFoundError) as error:
        raise visitor_error(f"The {role} image could not be read: {Path(path).name} is not an image file we can decode "
                            "(PNG, JPEG, TIFF, BMP, WebP...). Is it complete?", title="Unreadable image") from error
    return image


def metrics_table(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> list[list]:
    """Rows (metric, FusionFM, plain average of the inputs) for tensors (C, H, W) in [0, 1] of one size."""
    size = FusionImageProcessor.processing_size(tuple(fused.shape[-2:]), METRICS_MAX_SIDE)
    resized = [FusionImageProcessor.resize(image[None], size) for image in (fused, image_a, image_b)]
    fused_255, a_255, b_255 = (to_gray_255(image) for image in resized)
    ours, average = fusion_metrics(fused_255, a_255, b_255), fusion_metrics(average_255(a_255, b_255), a_255, b_255)
    return [[name, round(float(ours[name][0]), 4), round(float(average[name][0]), 4)] for name in SHOWN_METRICS]


# ---------------------------------------------------------------------------------------------- the app
class FusionApp:
    """The pipeline plus the app's limits; ``fuse`` is the /fuse endpoint."""

    def __init__(self, pipeline: FusionFMPipeline, max_side: int = 2048, keep_results_seconds: float = 3600,
                 max_upload_pixels: int = 25_000_000) -> None:
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.max_side = max_side
        self.max_upload_pixels = max_upload_pixels
        self.processor = FusionImageProcessor()
        self.results_dir = Path(tempfile.mkdtemp(prefix="fusionfm-app-"))
        self.keep_results_seconds = keep_results_seconds
        atexit.register(self.close)  # results of a stopped app are nobody's

    def close(self) -> None:
        """Remove this app's result folder (also done at interpreter exit)."""
        shutil.rmtree(self.results_dir, ignore_errors=True)

    def _result_folder(self) -> Path:
        """A fresh folder for one call's files; folders older than ``keep_results_seconds`` are removed."""
        now = time.time()
        for old in self.results_dir.iterdir():
            if now - old.stat().st_mtime > self.keep_results_seconds:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.results_dir))

    def fuse(self, task: str, path_a: str | None, path_b: str | None, num_inference_steps: float = 1,
             processing_resolution: float = 0, resize_b_to_a: bool = False, keep_contrast: bool = False,
             natural_exposure: bool = False):
        """Fuse one pair (``keep_contrast``: detail gain 1, the sources' own contrast, instead of the model's;
        ``natural_exposure``: MEF pairs blended by well-exposedness, ignored for other tasks). Returns (fused PNG
        path, (input, fused) for the slider, metrics rows, timing Markdown, fused PNG path for download, state for
        the comparison switch)."""
        started = time.perf_counter()
        if task not in [value for _, value in TASK_CHOICES]:
            raise visitor_error(f"Unknown task {task!r}; choose one of {', '.join(v for _, v in TASK_CHOICES)}.",
                                title="Unknown task")
        spec = get_task(task)
        steps = whole_number(num_inference_steps, "The number of flow steps", 1, MAX_STEPS)
        resolution = whole_number(processing_resolution, "The processing resolution (0 = input size)", 0,
                                  self.max_side)
        true_or_false(resize_b_to_a, "resize_b_to_a")
        detail_gain = contrast_setting(keep_contrast)
        natural = exposure_setting(natural_exposure, spec)
        image_a = read_upload(path_a, spec.label_a, self.max_upload_pixels)
        image_b = read_upload(path_b, spec.label_b, self.max_upload_pixels)
        notices = (self.processor.input_notices(image_a, spec.label_a)
                   + self.processor.input_notices(image_b, spec.label_b))
        downscaled = max(image_a.size) > self.max_side
        if downscaled:
            resolution = min(resolution or self.max_side, self.max_side)
            notices.append(f"The images are {image_a.width}x{image_a.height}, above this app's limit of "
                           f"{self.max_side} pixels per side: fused and returned at {self.max_side} on the long side.")
        if image_a.size != image_b.size and resize_b_to_a:
            notices.append(f"The {spec.label_b} image was resized from {image_b.width}x{image_b.height} to "
                           f"{image_a.width}x{image_a.height}.")
        size_mismatch = (
            f"The two images differ in size: {spec.label_a} is {image_a.width}x{image_a.height}, "
            f"{spec.label_b} is {image_b.width}x{image_b.height}. Fusion needs registered images of one size. "
            f"Tick 'Resize the {spec.label_b} image to match' under Advanced settings to resize it."
        )
        with failures_explained("images", size_mismatch):
            tensor_a = self.processor.to_tensor_list(image_a, spec.label_a)[0]
            tensor_b = self.processor.to_tensor_list(image_b, spec.label_b)[0]
            fuse_started = time.perf_counter()
            fused = self.pipeline(tensor_a, tensor_b, task=spec, num_inference_steps=steps,
                                  processing_resolution=resolution, match_input_resolution=not downscaled,
                                  resize_b_to_a=resize_b_to_a, detail_gain=detail_gain, natural_exposure=natural,
                                  output_type="pt").images[0]
            fuse_seconds = time.perf_counter() - fuse_started

        for notice in notices:  # a toast in the page; API clients read them in the timing text
            gr.Warning(notice)
        size = tuple(fused.shape[-2:])
        shown_a, shown_b = (self.processor.resize(image[None], size)[0] for image in (tensor_a, tensor_b))
        folder = self._result_folder()
        fused_path = folder / f"fused_{spec.name}_{Path(path_a).stem}.png"
        paths = {"a": folder / "input_a.png", "b": folder / "input_b.png"}
        to_pil(fused).save(fused_path, compress_level=PNG_COMPRESS_LEVEL)
        to_pil(shown_a).save(paths["a"], compress_level=PNG_COMPRESS_LEVEL)
        to_pil(shown_b).save(paths["b"], compress_level=PNG_COMPRESS_LEVEL)
        table = metrics_table(fused, shown_a, shown_b)
        timing = (f"Fused {size[1]}x{size[0]} ({'gray' if fused.shape[0] == 1 else 'colour'}) in "
                  f"**{fuse_seconds:.2f} s** ({steps} step{'s' if steps > 1 else ''}{KEPT_CONTRAST * keep_contrast}"
                  f"{NATURAL_EXPOSURE * natural}); "
                  f"{time.perf_counter() - started:.2f} s with loading and metrics."
                  + "".join(f"\n\nNote: {notice}" for notice in notices))
        state = {"a": str(paths["a"]), "b": str(paths["b"]), "fused": str(fused_path)}
        del fused, tensor_a, tensor_b, shown_a, shown_b
        trim_memory()
        return str(fused_path), (state["b"], state["fused"]), table, timing, str(fused_path), state

    def fuse_frames(self, task: str, paths: list[str] | None, processing_resolution: float = 0,
                    resize_to_first: bool = False, keep_contrast: bool = False, natural_exposure: bool = False):
        """Fuse an exposure bracket or focus stack (2 to MAX_FRAMES files); the outputs of :meth:`fuse`, with
        the darkest and brightest frames (MEF) or the first and last (MFF) as the two comparison inputs."""
        started = time.perf_counter()
        if task not in STACK_TASKS:
            raise visitor_error(f"Several frames can be fused for multi-exposure (MEF) and multi-focus (MFF); "
                                f"{task!r} takes two images: use the two image inputs.", "Pick MEF or MFF")
        paths = [path for path in (paths or []) if path]
        if not 2 <= len(paths) <= MAX_FRAMES:
            raise visitor_error(f"Upload 2 to {MAX_FRAMES} frames of one scene; got {len(paths)}.", "Frames")
        resolution = whole_number(processing_resolution, "The processing resolution (0 = input size)", 0,
                                  self.max_side)
        true_or_false(resize_to_first, "resize")
        detail_gain = contrast_setting(keep_contrast)
        natural = exposure_setting(natural_exposure, get_task(task))
        images = [read_upload(path, f"frame {index + 1} ({Path(path).name})", self.max_upload_pixels)
                  for index, path in enumerate(paths)]
        total = sum(image.width * image.height for image in images)
        if total > 4 * self.max_upload_pixels:
            raise visitor_error(f"The frames hold {total / 1e6:.0f} megapixels together, above this app's limit of "
                                f"{4 * self.max_upload_pixels / 1e6:.0f}. Upload fewer or smaller frames.",
                                "Too many pixels")
        sizes = {image.size for image in images}
        if len(sizes) > 1 and not resize_to_first:
            listed = ", ".join(f"{Path(path).name} {image.width}x{image.height}" for path, image in zip(paths, images,
                                                                                                       strict=True))
            raise visitor_error(f"The frames differ in size ({listed}). Tick 'Resize the frames to the first' to "
                                "resize them.", "Different sizes")
        notices = [notice for path, image in zip(paths, images, strict=True)
                   for notice in self.processor.input_notices(image, Path(path).name)]
        downscaled = max(images[0].size) > self.max_side
        if downscaled:
            resolution = min(resolution or self.max_side, self.max_side)
            notices.append(f"The frames are {images[0].width}x{images[0].height}, above this app's limit of "
                           f"{self.max_side} pixels per side: fused and returned at {self.max_side} on the long side.")
        with failures_explained("frames"):
            tensors = [self.processor.to_tensor_list(image, Path(path).name)[0] for path, image in
                       zip(paths, images, strict=True)]
            fuse_started = time.perf_counter()
            fused = self.pipeline(tensors, task=task, processing_resolution=resolution,
                                  match_input_resolution=not downscaled, resize_b_to_a=resize_to_first,
                                  detail_gain=detail_gain, natural_exposure=natural, output_type="pt").images[0]
            fuse_seconds = time.perf_counter() - fuse_started
        for notice in notices:
            gr.Warning(notice)
        size = tuple(fused.shape[-2:])
        shown = [self.processor.resize(tensor[None], size)[0] for tensor in tensors]
        brightness = [float(frame.mean()) for frame in shown]
        order = sorted(range(len(shown)), key=brightness.__getitem__) if task == "MEF" else list(range(len(shown)))
        folder = self._result_folder()
        fused_path = folder / f"fused_{task}_{len(paths)}_frames.png"
        to_pil(fused).save(fused_path, compress_level=PNG_COMPRESS_LEVEL)
        paths_shown = {"a": folder / "first.png", "b": folder / "last.png"}
        to_pil(shown[order[0]]).save(paths_shown["a"], compress_level=PNG_COMPRESS_LEVEL)
        to_pil(shown[order[-1]]).save(paths_shown["b"], compress_level=PNG_COMPRESS_LEVEL)
        table = stack_metrics_table(fused, shown, task)
        timing = (f"Fused {len(paths)} frames at {size[1]}x{size[0]}{KEPT_CONTRAST * keep_contrast}"
                  f"{NATURAL_EXPOSURE * (natural and len(paths) == 2)} in "
                  f"**{fuse_seconds:.2f} s**; "
                  f"{time.perf_counter() - started:.2f} s with loading and metrics."
                  + "".join(f"\n\nNote: {notice}" for notice in notices))
        state = {"a": str(paths_shown["a"]), "b": str(paths_shown["b"]), "fused": str(fused_path)}
        del fused, tensors, shown
        trim_memory()
        return str(fused_path), (state["b"], state["fused"]), table, timing, str(fused_path), state


def stack_metrics_table(fused: torch.Tensor, frames: list[torch.Tensor], task: str) -> list[list]:
    """Rows (metric, FusionFM, mean of the frames) for a stack, on copies at most METRICS_MAX_SIDE on the long
    side: MEF-SSIM for exposure brackets, then the no-reference EN, SF and AG."""
    size = FusionImageProcessor.processing_size(tuple(fused.shape[-2:]), METRICS_MAX_SIDE)
    fused, *frames = (FusionImageProcessor.resize(image[None], size)[0] for image in (fused, *frames))
    stack = torch.stack([frame.expand(fused.shape[0], -1, -1) for frame in frames])
    mean = stack.mean(dim=0)
    rows = [["MEF-SSIM", round(mef_ssim(fused, stack), 4), round(mef_ssim(mean, stack), 4)]] if task == "MEF" else []
    for name, metric in (("EN", entropy), ("SF", spatial_frequency), ("AG", average_gradient)):
        ours, average = (float(metric(to_gray_255(image[None]))[0]) for image in (fused, mean))
        rows.append([name, round(ours, 4), round(average, 4)])
    return rows


def comparison(state: dict | None, side: str):
    """The slider's pair for the chosen input ("a" or "b") and the last result."""
    if not state:
        return None
    return state[side], state["fused"]


def on_task_change(task: str):
    label_a, label_b = input_labels(task)
    return (gr.update(label=label_a), gr.update(label=label_b),
            gr.update(choices=[(label_a, "a"), (label_b, "b")]),
            gr.update(label=f"Resize the {label_b} image to match the {label_a} image"))


def example_rows() -> list[list[str]]:
    """[task, image a, image b] for every bundled example pair (see examples/README.md)."""
    rows = []
    for _, task in TASK_CHOICES:
        spec = get_task(task)
        folder = EXAMPLES_DIR / task
        for path_a in sorted(folder.glob(f"*_{spec.modality_a}.*")):
            stem = path_a.name[: -len(f"_{spec.modality_a}{path_a.suffix}")]
            partners = sorted(folder.glob(f"{stem}_{spec.modality_b}.*"))
            if partners:
                rows.append([task, str(path_a), str(partners[0])])
    return rows


def build_demo(app: FusionApp, concurrency: int = 2) -> gr.Blocks:
    label_a, label_b = input_labels("IVF")
    with gr.Blocks(title="FusionFM", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# FusionFM: one-step image fusion\n"
            "Upload two **registered** images of one scene (same size, aligned), pick the task and press "
            "**Fuse**. One small flow-matching network serves all tasks; gray, colour and 16-bit inputs keep "
            "their mode. Example pairs are at the bottom of the page. The default look is the benchmarked one (a "
            "little sharper than the sources; exposure pairs bright); **Advanced settings** keep the sources' own "
            "contrast or blend exposure pairs for natural skies and highlights."
        )
        task = TaskSelector(TASK_CHOICES, value="IVF", label="Task", elem_id="task")
        with gr.Row():
            image_a = UploadedImage(label=label_a, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                    elem_id="image-a")
            image_b = UploadedImage(label=label_b, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                    elem_id="image-b")
        with gr.Accordion("Advanced settings", open=False):
            steps = SettingSlider(1, MAX_STEPS, value=1, step=1, label="Flow steps (1 is the trained setting)")
            resolution = SettingSlider(0, app.max_side, value=0, step=32,
                                   label="Processing resolution: long side in pixels (0 = input size)")
            resize = gr.Checkbox(False, label=f"Resize the {label_b} image to match the {label_a} image")
            keep_contrast = gr.Checkbox(False, label="Keep the sources' own contrast: no added sharpening, the "
                                                     "most faithful result (for focus stacks and scans)",
                                        elem_id="keep-contrast")
            natural_exposure = gr.Checkbox(False, label="Exposure pairs (MEF): natural skies and highlights, blended "
                                                        "by how well exposed each part is (darker, less contrast)",
                                           elem_id="natural-exposure")
        with gr.Accordion(f"Exposure bracket or focus stack (MEF, MFF): 2 to {MAX_FRAMES} frames", open=False):
            frames = gr.File(label="Frames of one scene (any order)", file_count="multiple", type="filepath",
                             elem_id="frames")
            resize_frames = gr.Checkbox(False, label="Resize the frames to the first")
            run_frames = gr.Button("Fuse the frames", elem_id="fuse-frames")
        run = gr.Button("Fuse", variant="primary", elem_id="fuse")
        with gr.Row():
            fused = gr.Image(label="Fused", type="filepath", format="png", interactive=False,
                             buttons=["download", "fullscreen"], elem_id="fused")
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", type="filepath", format="png", interactive=False)
                compare = gr.Radio([(label_a, "a"), (label_b, "b")], value="b", label="Compare the result with")
        timing = gr.Markdown(elem_id="timing")
        with gr.Row():
            metrics = gr.Dataframe(
                headers=["metric", "FusionFM", "average of the inputs"], interactive=False,
                label=f"Metrics (higher is better; computed on a copy at most {METRICS_MAX_SIDE} px on the long side)")
            download = gr.File(label="Fused image (PNG)", interactive=False)
        state = gr.State(None)
        gr.Examples(example_rows(), inputs=[task, image_a, image_b],
                    label="Example pairs (sources and licences in examples/README.md)")

        task.change(on_task_change, task, [image_a, image_b, compare, resize], api_name=False)
        run.click(app.fuse, [task, image_a, image_b, steps, resolution, resize, keep_contrast, natural_exposure],
                  [fused, slider, metrics, timing, download, state], api_name="fuse", concurrency_limit=concurrency,
                  ).success(comparison, [state, compare], slider, api_name=False)
        run_frames.click(app.fuse_frames, [task, frames, resolution, resize_frames, keep_contrast,
                                           natural_exposure],
                         [fused, slider, metrics, timing, download, state], api_name="fuse_frames",
                         concurrency_limit=concurrency).success(comparison, [state, compare], slider, api_name=False)
        compare.change(comparison, [state, compare], slider, api_name=False)
    demo.queue(max_size=64)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FusionFM web app")
    parser.add_argument("--model", default=os.environ.get("FUSIONFM_MODEL") or None,
                        help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--host", default=os.environ.get("FUSIONFM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUSIONFM_PORT", "7860")))
    parser.add_argument("--max-side", type=int, default=int(os.environ.get("FUSIONFM_MAX_SIDE", "2048")))
    parser.add_argument("--max-upload-pixels", type=int,
                        default=int(os.environ.get("FUSIONFM_MAX_UPLOAD_PIXELS", "25000000")),
                        help="uploads with more pixels are refused from their header, before decoding")
    parser.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("FUSIONFM_MAX_UPLOAD_MB", "50")),
                        help="largest upload file in megabytes")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("FUSIONFM_CONCURRENCY", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FUSIONFM_THREADS", "0")),
                        help="torch threads (0: the CPU count divided by --concurrency, so that concurrent calls "
                             "do not oversubscribe the cores)")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--compile", action="store_true", default=os.environ.get("FUSIONFM_COMPILE") == "1",
                        help="compile the U-Net with torch.compile in the background (minutes the first time, "
                             "then from the on-disk cache); serves eager until it is ready")
    return parser.parse_args(argv)


def compile_in_background(pipeline: FusionFMPipeline) -> threading.Thread:
    """Compile the pipeline's U-Net in a daemon thread; calls run eager until it is swapped in."""

    def compile_now() -> None:
        started = time.perf_counter()
        try:
            pipeline.compile_unet()
        except Exception:  # a failed compilation leaves the app serving eager, as before
            logger.exception("compilation failed; serving the eager model")
            return
        logger.info("compiled U-Net in use after %.0f s (%s)", time.perf_counter() - started, pipeline.compiled_dtype)

    thread = threading.Thread(target=compile_now, name="fusionfm-compile", daemon=True)
    thread.start()
    return thread


_LIBC = None


def keep_memory_flat() -> None:
    """glibc only: at most two malloc arenas, blocks of 8 MB and more always mmapped (so freed at once), and
    free heap pages handed back after every call (``trim``). Elsewhere (macOS, musl) nothing is changed.

    By default glibc raises its mmap threshold after large frees (up to 32 MB) and gives each worker thread an
    arena, so the full-size float images of every call stay in the heap: resident size doubled over 100 calls
    (724 -> 1498 MB, benchmarks/app_memory.py). With two arenas and trimming it still rose in steps of 30-60 MB
    (+12.8 % after the first 20 of 200 mixed calls, twice); with the fixed 8 MB threshold as well, +4.7 %, flat
    from call 40. A 1 MB threshold was as flat (+5.4 %) but made every 640x480 call about 1.6x slower (each
    mmapped block is page-faulted afresh); 8 MB costs about 10-15 % of a call's time (quiet, interleaved: 150
    -> 175 ms per 640x480 call).
    """
    global _LIBC
    try:
        _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.mallopt(-8, 2)  # M_ARENA_MAX
        _LIBC.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD: blocks of 8 MB and more always mmapped, never kept
    except (OSError, AttributeError):
        _LIBC = None


def trim_memory() -> None:
    """Return the heap's free pages to the system (glibc ``malloc_trim``; nothing elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_memory_flat()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Measured on 2 cores under load: twelve metrics took 3.8 s with 2 threads, 0.68 s with one.
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.concurrency, 1))
    torch.set_num_threads(threads)
    logger.info("torch threads: %d (concurrency %d)", threads, args.concurrency)
    try:
        pipeline = FusionFMPipeline.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        print(f"error: could not load the FusionFM model: {error}", file=sys.stderr)
        return 2
    if args.compile:
        compile_in_background(pipeline)
    demo = build_demo(FusionApp(pipeline, args.max_side, max_upload_pixels=args.max_upload_pixels), args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=int(args.max_upload_mb * 1024 * 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
