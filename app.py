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
from fusionfm.image_processor import FusionImageProcessor, ImageTooLargeError, SizeMismatchError, to_pil
from fusionfm.memory import keep_memory_flat, trim_memory
from fusionfm.metrics.fusion import average_gradient, entropy, fusion_metrics, spatial_frequency, to_gray_255
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.tasks import FusionTask
from fusionfm.threads import default_threads

# The app shows these notices to the visitor itself (FusionImageProcessor.input_notices), not in the server log.
warnings.filterwarnings("ignore", category=FusionInputWarning)

logger = logging.getLogger("fusionfm.app")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TASK_CHOICES = [("Infrared + visible (IVF)", "IVF"), ("MRI + CT (MIF)", "MIF-CT"), ("MRI + PET (MIF)", "MIF-PET"),
                ("MRI + SPECT (MIF)", "MIF-SPECT"), ("Multi-exposure (MEF)", "MEF"), ("Multi-focus (MFF)", "MFF")]
SHOWN_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
METRICS_MAX_SIDE = 512  # metrics of larger results are computed on a copy downscaled to this long side
MAX_STEPS = 8  # the steps slider's range; the model is trained for one step
# zlib level 1: PNG encoding at the default level takes longer than the fusion itself (three images per answer);
# level 1 is several times faster for files about a third larger.
PNG_COMPRESS_LEVEL = 1
MAX_FRAMES = 16  # frames of one exposure bracket or focus stack
STACK_TASKS = ("MEF", "MFF")
TASK_VALUES = [value for _, value in TASK_CHOICES]


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
def failures_explained(what: str) -> Iterator[None]:
    """Turn every failure of a fusion of ``what`` ("images", "frames") into a message for the visitor: the
    library's ValueError/TypeError as it is, anything else as an unexpected failure whose stack trace goes to the
    log only."""
    try:
        yield
    except SizeMismatchError as error:
        raise visitor_error(str(error), title="Different sizes") from error
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
    else None (the gains the model learned); a gr.Error for anything but true or false."""
    return 1.0 if true_or_false(keep_contrast, "keep_contrast") else None


def input_labels(task: str) -> tuple[str, str]:
    spec = get_task(task)
    return spec.label_a, spec.label_b


def task_spec(task) -> FusionTask:
    """The task a page or API value names, read as the library reads task names (any case, 'MIF' for the
    MIF class); else a gr.Error listing the tasks."""
    try:
        return get_task(task)
    except (ValueError, TypeError) as error:
        raise visitor_error(f"{error} The page offers: {', '.join(TASK_VALUES)}.", title="Unknown task") from error


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
    """The pipeline plus the app's limits; :meth:`fuse` is the /fuse endpoint, :meth:`fuse_frames` /fuse_frames and
    :meth:`fuse_page` the page's one Fuse button."""

    def __init__(self, pipeline: FusionFMPipeline, max_side: int = 2048, keep_results_seconds: float = 3600,
                 max_upload_pixels: int = 25_000_000) -> None:
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.max_side = max_side
        self.max_upload_pixels = max_upload_pixels
        self.processor = pipeline.image_processor
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
        """Fuse one pair (``keep_contrast``: detail gain 1, the sources' own contrast; ``natural_exposure``: an
        exposure pair blended by well-exposedness, refused for other tasks as the library refuses it). Returns
        (fused PNG path, (input, fused) for the slider, metrics rows, timing Markdown, fused PNG path for download,
        state for the comparison switch)."""
        return self._fuse(task, [path_a, path_b], True, num_inference_steps, processing_resolution, resize_b_to_a,
                          keep_contrast, natural_exposure)

    def fuse_frames(self, task: str, paths: list[str] | None, processing_resolution: float = 0,
                    resize_to_first: bool = False, keep_contrast: bool = False, natural_exposure: bool = False):
        """Fuse an exposure bracket or focus stack (2 to MAX_FRAMES files); the outputs of :meth:`fuse`, with the
        darkest and brightest frames (MEF) or the first and last (MFF) as the two comparison inputs."""
        return self._fuse(task, list(paths or []), False, 1, processing_resolution, resize_to_first, keep_contrast,
                          natural_exposure)

    def fuse_page(self, task: str, path_a: str | None, path_b: str | None, frames: list[str] | None,
                  num_inference_steps: float, processing_resolution: float, resize: bool, keep_contrast: bool,
                  natural_exposure: bool):
        """The page's Fuse button: the uploaded frames when there are any, else the two images."""
        if frames:
            ignored = [label for label, path in zip(input_labels(task) if task in TASK_VALUES else ("",) * 2,
                                                    (path_a, path_b), strict=True) if path]
            notices = ([f"The {len(frames)} uploaded frames were fused; the {' and '.join(ignored)} image input"
                        f"{'s were' if len(ignored) > 1 else ' was'} not used (remove the frames to fuse the two "
                        "images)."] if ignored else [])
            return self._fuse(task, list(frames), False, 1, processing_resolution, resize, keep_contrast,
                              natural_exposure, notices)
        return self._fuse(task, [path_a, path_b], True, num_inference_steps, processing_resolution, resize,
                          keep_contrast, natural_exposure)

    def _fuse(self, task: str, paths: list[str | None], pair: bool, num_inference_steps, processing_resolution,
              resize, keep_contrast, natural_exposure, notices: list[str] | None = None):
        """One fusion of a pair (``pair``) or of a stack of frames, checked, run and written out (see :meth:`fuse`)."""
        started = time.perf_counter()
        notices = list(notices or [])
        spec = task_spec(task)
        what = "images" if pair else "frames"
        if pair:
            labels = [spec.label_a, spec.label_b]
            for path, label in zip(paths, labels, strict=True):
                if not path:
                    hint = (" To fuse the frames of a bracket or stack, upload them under 'Exposure bracket or focus "
                            "stack' instead." if spec.family in STACK_TASKS else "")
                    raise visitor_error(f"The {label} image is missing: upload it (or pick an example below).{hint}",
                                        "Missing image")
        else:
            if spec.family not in STACK_TASKS:
                raise visitor_error(f"Several frames can be fused for multi-exposure (MEF) and multi-focus (MFF); "
                                    f"{spec.name} takes two images: use the two image inputs.", "Pick MEF or MFF")
            paths = [path for path in paths if path]
            if not 2 <= len(paths) <= MAX_FRAMES:
                raise visitor_error(f"Upload 2 to {MAX_FRAMES} frames of one scene; got {len(paths)}.", "Frames")
            labels = [f"frame {index + 1} ({Path(path).name})" for index, path in enumerate(paths)]
        steps = whole_number(num_inference_steps, "The number of flow steps", 1, MAX_STEPS)
        resolution = whole_number(processing_resolution, "The processing resolution (0 = input size)", 0,
                                  self.max_side)
        resize = true_or_false(resize, "resize")
        detail_gain = contrast_setting(keep_contrast)
        natural = true_or_false(natural_exposure, "natural_exposure")
        with failures_explained(what):
            self.pipeline.check_options(spec, steps, resolution, 1, "pt", 0, detail_gain, natural, None)
        images = [read_upload(path, label, self.max_upload_pixels) for path, label in zip(paths, labels, strict=True)]
        total = sum(image.width * image.height for image in images)
        if not pair and total > 4 * self.max_upload_pixels:
            raise visitor_error(f"The frames hold {total / 1e6:.0f} megapixels together, above this app's limit of "
                                f"{4 * self.max_upload_pixels / 1e6:.0f}. Upload fewer or smaller frames.",
                                "Too many pixels")
        if len({image.size for image in images}) > 1:
            listed = ", ".join(f"{label} is {image.width}x{image.height}" for label, image in zip(labels, images,
                                                                                                  strict=True))
            if not resize:
                opening = "The two images differ in size" if pair else "The frames differ in size"
                raise visitor_error(f"{opening}: {listed}. Fusion needs registered images of one size. Tick 'Resize "
                                    "to the first image' under Advanced settings to resize them.", "Different sizes")
            notices += [f"The {label} image was resized from {image.width}x{image.height} to "
                        f"{images[0].width}x{images[0].height}." for label, image in zip(labels, images, strict=True)
                        if image.size != images[0].size]
        for image, label in zip(images, labels, strict=True):
            notices += self.processor.input_notices(image, label)
        downscaled = max(images[0].size) > self.max_side
        if downscaled:
            resolution = min(resolution or self.max_side, self.max_side)
            notices.append(f"The {what} are {images[0].width}x{images[0].height}, above this app's limit of "
                           f"{self.max_side} pixels per side: fused and returned at {self.max_side} on the long side.")
        with failures_explained(what):
            tensors = [self.processor.to_tensor_list(image, label)[0] for image, label in zip(images, labels,
                                                                                              strict=True)]
            fuse_started = time.perf_counter()
            options = dict(task=spec, processing_resolution=resolution, match_input_resolution=not downscaled,
                           resize_b_to_a=resize, detail_gain=detail_gain, natural_exposure=natural, output_type="pt")
            if pair:
                fused = self.pipeline(tensors[0], tensors[1], num_inference_steps=steps, **options).images[0]
            else:
                fused = self.pipeline(tensors, **options).images[0]
            fuse_seconds = time.perf_counter() - fuse_started
        for notice in notices:  # a toast in the page; API clients read them in the timing text
            gr.Warning(notice)
        size = tuple(fused.shape[-2:])
        frames = [self.processor.resize(tensor[None], size)[0] for tensor in tensors]
        if not pair and spec.family == "MEF":  # darkest and brightest frame
            frames = sorted(frames, key=lambda frame: float(frame.mean()))
        shown = [frames[0], frames[-1]]
        folder = self._result_folder()
        name = f"{Path(paths[0]).stem}" if pair else f"{len(paths)}_frames"
        fused_path = folder / f"fused_{spec.name}_{name}.png"
        shown_paths = {"a": folder / "input_a.png", "b": folder / "input_b.png"}
        to_pil(fused).save(fused_path, compress_level=PNG_COMPRESS_LEVEL)
        for side, image in zip("ab", shown, strict=True):
            to_pil(image).save(shown_paths[side], compress_level=PNG_COMPRESS_LEVEL)
        settings = f"{KEPT_CONTRAST * bool(detail_gain)}{NATURAL_EXPOSURE * natural}"
        if pair:
            table = metrics_table(fused, *shown)
            done = (f"Fused {size[1]}x{size[0]} ({'gray' if fused.shape[0] == 1 else 'colour'}) in "
                    f"**{fuse_seconds:.2f} s** ({steps} step{'s' if steps > 1 else ''}{settings})")
        else:
            table = stack_metrics_table(fused, frames, spec.family)
            done = f"Fused {len(paths)} frames at {size[1]}x{size[0]}{settings} in **{fuse_seconds:.2f} s**"
        timing = (f"{done}; {time.perf_counter() - started:.2f} s with loading and metrics."
                  + "".join(f"\n\nNote: {notice}" for notice in notices))
        state = {"a": str(shown_paths["a"]), "b": str(shown_paths["b"]), "fused": str(fused_path)}
        del fused, tensors, frames, shown
        trim_memory()
        return str(fused_path), (state["b"], state["fused"]), table, timing, str(fused_path), state

    def check_upload(self, path: str | None):
        """An image as it arrives: kept (no change) if it reads as an image within the app's limits, else cleared
        with a warning that says why."""
        if not path:
            return gr.skip()
        try:
            read_upload(path, "uploaded", self.max_upload_pixels)
        except gr.Error as error:
            gr.Warning(error.message, duration=None, title=error.title)
            return None
        return gr.skip()

    def check_frame_uploads(self, paths: list[str] | None):
        """Frames as they arrive: the unreadable ones are dropped with a warning each."""
        kept = []
        for path in paths or []:
            try:
                read_upload(path, f"frame {Path(path).name}", self.max_upload_pixels)
                kept.append(path)
            except gr.Error as error:
                gr.Warning(error.message, duration=None, title=error.title)
        return gr.skip() if len(kept) == len(paths or []) else kept


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
    """The page after a task choice: the inputs' labels, the comparison choices, and the exposure setting (shown
    for MEF only, and cleared for the other tasks, which refuse it)."""
    label_a, label_b = input_labels(task)
    exposure = get_task(task).family == "MEF"
    return (gr.update(label=label_a), gr.update(label=label_b),
            gr.update(choices=[(label_a, "a"), (label_b, "b")]),
            gr.update(visible=exposure, value=False) if not exposure else gr.update(visible=True))


def example_rows() -> list[list[str]]:
    """[task, image a, image b] for every bundled example pair (see examples/README.md)."""
    rows = []
    for task in TASK_VALUES:
        spec = get_task(task)
        folder = EXAMPLES_DIR / task
        for path_a in sorted(folder.glob(f"*_{spec.modality_a}.*")):
            stem = path_a.name[: -len(f"_{spec.modality_a}{path_a.suffix}")]
            partners = sorted(folder.glob(f"{stem}_{spec.modality_b}.*"))
            if partners:
                rows.append([task, str(path_a), str(partners[0])])
    return rows


EXAMPLE_GROUPS = {"IVF": ("Infrared + visible", "Infrared", "Visible"),
                  "MIF": ("Medical", "MRI", "CT, PET or SPECT"),
                  "MEF": ("Multi-exposure", "Under-exposed", "Over-exposed"),
                  "MFF": ("Multi-focus", "Near focus", "Far focus")}
"""Example tables by task family: title and the headers of its two image columns."""

# Errors and notices appear at the bottom right, over the results they concern, not over the introduction.
APP_CSS = ".toast-wrap { top: auto !important; bottom: var(--size-4) !important; }"


def build_demo(app: FusionApp, concurrency: int = 2) -> gr.Blocks:
    label_a, label_b = input_labels("IVF")
    with gr.Blocks(title="FusionFM", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# FusionFM: one-step image fusion\n"
            "Upload two **registered** images of one scene (same size, aligned), or the frames of an exposure "
            "bracket or focus stack, pick the task and press **Fuse**. One small flow-matching network serves all "
            "tasks; gray, colour and 16-bit inputs keep their mode. Example pairs are at the bottom of the page; "
            "**Advanced settings** keep the sources' own contrast or blend exposure pairs for natural skies and "
            "highlights."
        )
        task = TaskSelector(TASK_CHOICES, value="IVF", label="Task", elem_id="task")
        with gr.Row():
            image_a = UploadedImage(label=label_a, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                    elem_id="image-a")
            image_b = UploadedImage(label=label_b, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                    elem_id="image-b")
        with gr.Accordion(f"Exposure bracket or focus stack (MEF, MFF): 2 to {MAX_FRAMES} frames instead of two "
                          "images", open=False):
            frames = gr.File(label="Frames of one scene (any order); Fuse uses these when there are any",
                             file_count="multiple", type="filepath", elem_id="frames")
        with gr.Accordion("Advanced settings", open=False):
            steps = SettingSlider(1, MAX_STEPS, value=1, step=1, label="Flow steps (1 is the trained setting)")
            resolution = SettingSlider(0, app.max_side, value=0, step=32,
                                       label="Processing resolution: long side in pixels (0 = input size)")
            resize = gr.Checkbox(False, label="Resize to the first image (when the sizes differ)", elem_id="resize")
            keep_contrast = gr.Checkbox(False, label="Keep the sources' own contrast: every detail at the sources' "
                                                     "strength instead of the model's learned gains",
                                        elem_id="keep-contrast")
            natural_exposure = gr.Checkbox(False, label="Exposure pairs: natural skies and highlights, blended by "
                                                        "how well exposed each part is (darker, less contrast)",
                                           elem_id="natural-exposure", visible=False)
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
        gr.Markdown("## Example pairs\nClick one to load it (sources and licences in examples/README.md).")
        rows = example_rows()
        for families in (("IVF", "MIF"), ("MEF", "MFF")):
            with gr.Row():
                for family in families:
                    title, header_a, header_b = EXAMPLE_GROUPS[family]
                    chosen = [row for row in rows if get_task(row[0]).family == family]
                    with gr.Column():
                        examples = gr.Examples(chosen, inputs=[task, image_a, image_b], label=title,
                                               examples_per_page=len(chosen))
                        examples.dataset.headers = ["Task", header_a, header_b]

        outputs = [fused, slider, metrics, timing, download, state]
        task.change(on_task_change, task, [image_a, image_b, compare, natural_exposure], api_name=False)
        image_a.upload(app.check_upload, image_a, image_a, api_name=False)
        image_b.upload(app.check_upload, image_b, image_b, api_name=False)
        frames.upload(app.check_frame_uploads, frames, frames, api_name=False)
        run.click(app.fuse_page, [task, image_a, image_b, frames, steps, resolution, resize, keep_contrast,
                                  natural_exposure], outputs, api_name=False, concurrency_limit=concurrency,
                  concurrency_id="fusion").success(comparison, [state, compare], slider, api_name=False)
        # The API: /fuse (a pair) and /fuse_frames (a stack), on buttons the page does not show.
        fuse_pair = gr.Button(visible=False)
        fuse_pair.click(app.fuse, [task, image_a, image_b, steps, resolution, resize, keep_contrast,
                                   natural_exposure], outputs, api_name="fuse", concurrency_limit=concurrency,
                        concurrency_id="fusion")
        fuse_stack = gr.Button(visible=False)
        fuse_stack.click(app.fuse_frames, [task, frames, resolution, resize, keep_contrast, natural_exposure],
                         outputs, api_name="fuse_frames", concurrency_limit=concurrency, concurrency_id="fusion")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_memory_flat()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = args.threads or default_threads(args.concurrency)
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
                max_file_size=int(args.max_upload_mb * 1024 * 1024), css=APP_CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
