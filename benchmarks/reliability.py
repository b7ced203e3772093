"""The reliability battery: bad and odd inputs through the Python API and the app, one line each.

    python benchmarks/reliability.py [--model path/or/hub-id] [--no-app]

Every case prints its outcome (the result's size and mode, or the error or warning a user sees) and seconds.
A case passes when it ends in a result, a FusionInputWarning or a clear ValueError/TypeError (the API), or a
gr.Error message (the app); anything else (a stack trace from inside, a hang, an all-black result from a
non-black input) is a FAIL. The README's reliability section quotes this table. One torch thread.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusionfm import FusionFMPipeline, FusionInputWarning, load_image  # noqa: E402

EXAMPLE = REPO / "examples" / "IVF"
RNG = np.random.default_rng(0)


def image_files(folder: Path) -> dict[str, Path]:
    """Odd and broken files, made on the spot."""
    files: dict[str, Path] = {}
    ir = PIL.Image.open(EXAMPLE / "TNO_07_ir.png").convert("L")

    def save(name: str, image: PIL.Image.Image, **options) -> None:
        files[name] = folder / name
        image.save(files[name], **options)

    files["zero-byte.png"] = folder / "zero-byte.png"
    files["zero-byte.png"].write_bytes(b"")
    files["truncated.png"] = folder / "truncated.png"
    buffer = io.BytesIO()
    ir.save(buffer, "PNG")
    files["truncated.png"].write_bytes(buffer.getvalue()[:400])
    files["text.png"] = folder / "text.png"
    files["text.png"].write_text("not an image")
    save("bomb-14000x14000.png", PIL.Image.new("L", (14000, 14000)))
    save("1x1.png", PIL.Image.new("L", (1, 1), 100))
    save("1x4000.png", PIL.Image.new("L", (4000, 1), 100))
    save("16bit-big-endian.png", PIL.Image.fromarray((np.asarray(ir, np.uint16) * 200 + 3000).astype(">u2")))
    save("float.tif", PIL.Image.fromarray(np.asarray(ir, np.float32) / 255))
    save("cmyk.jpg", ir.convert("CMYK"))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    save("exif-rotated.jpg", ir.convert("RGB"), exif=exif)
    frames = [ir.point(lambda v, k=k: v // (k + 1)) for k in range(3)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:])
    save("multipage.tif", frames[0], save_all=True, append_images=frames[1:])
    suffixes = {"CMYK": "jpg", "YCbCr": "jpg", "I": "tif", "F": "tif"}
    save("mode-P-transparent.png", ir.convert("RGB").convert("P"), transparency=0)
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"):
        image = ir.convert(mode) if mode in ("I;16", "I", "F") else ir.convert("RGB").convert(mode)
        save(f"mode-{mode.replace(';', '')}.{suffixes.get(mode, 'png')}", image)
    return files


def api_cases(files: dict[str, Path]) -> list[tuple[str, dict]]:
    """(case, keyword arguments for the pipeline; "a" and "b" are the sources)."""
    ir, vi = PIL.Image.open(EXAMPLE / "TNO_07_ir.png"), PIL.Image.open(EXAMPLE / "TNO_07_vi.png")
    h, w = ir.height, ir.width
    cases = [(f"file {name}", {"a": path, "b": "same size"}) for name, path in files.items()]
    arrays = {
        "NaN array": np.full((h, w), np.nan, np.float32), "inf array": np.full((h, w), np.inf, np.float32),
        "negative float array": -np.ones((h, w), np.float32), "float array > 1": np.full((h, w), 3.0),
        "int64 array": RNG.integers(0, 5000, (h, w)), "bool array": np.ones((h, w), bool),
        "complex array": np.ones((h, w), np.complex64), "uint16 constant": np.full((h, w), 30000, np.uint16),
        "(H, W, 2) array": np.zeros((h, w, 2), np.uint8), "(3, H, W) array": np.zeros((3, h, w), np.uint8),
        "5-D tensor": torch.zeros(1, 1, 1, h, w), "empty array": np.zeros((0, 0, 3), np.uint8),
        "channels-last tensor": torch.zeros(h, w, 3),
    }
    cases += [(name, {"a": array, "b": vi}) for name, array in arrays.items()]
    cases += [("mismatched sizes", {"a": ir, "b": vi.resize((w // 2, h // 2))}),
              ("unknown task", {"a": ir, "b": vi, "task": "Panorama"}), ("task None", {"a": ir, "b": vi, "task": None}),
              ("a path string", {"a": str(EXAMPLE / "TNO_07_ir.png"), "b": vi})]
    for option in ("num_inference_steps", "processing_resolution", "batch_size"):
        for value in (0, -3, 1.5, 10**9, "abc"):
            cases.append((f"{option}={value!r}", {"a": ir, "b": vi, option: value}))
    cases += [("compute_dtype='fp16' on CPU", {"a": ir, "b": vi, "compute_dtype": "fp16"}),
              ("output_type='jpg'", {"a": ir, "b": vi, "output_type": "jpg"})]
    for value in (1, 31):
        cases.append((f"processing_resolution={value} (below the network's minimum)",
                      {"a": ir, "b": vi, "processing_resolution": value}))
    for name, integer in (("np.int64", np.int64), ("torch.tensor", torch.tensor)):
        cases.append((f"{name} steps and resolution", {"a": ir, "b": vi, "num_inference_steps": integer(1),
                                                       "processing_resolution": integer(256)}))
    cases += [(f"task={name!r}", {"a": ir, "b": vi, "task": name}) for name in ("ivf", " IVF ", "MIF")]
    cases += [("natural_exposure=True for IVF", {"a": ir, "b": vi, "natural_exposure": True}),
              ("processing above the pixel cap", {"a": ir, "b": vi, "processing_resolution": 20000})]
    return cases


def special_cases(files: dict[str, Path]) -> list[tuple[str, Callable[[FusionFMPipeline], object]]]:
    """Cases that are not one call with keyword arguments: (case, function of the pipeline)."""
    ir, vi = PIL.Image.open(EXAMPLE / "TNO_07_ir.png"), PIL.Image.open(EXAMPLE / "TNO_07_vi.png")
    closed = PIL.Image.open(EXAMPLE / "TNO_07_ir.png")
    closed.close()
    folder = files["zero-byte.png"].parent
    loop = folder / "loop_a.png"
    loop.symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(loop)

    def half_precision(compute_dtype: str | None) -> Callable[[FusionFMPipeline], object]:
        def call(pipe: FusionFMPipeline) -> object:
            pipe.to(torch.float16)
            try:
                return pipe(ir, vi, task="IVF", compute_dtype=compute_dtype, output_type="pt")
            finally:
                pipe.to(torch.float32)
        return call

    cases: list[tuple[str, Callable[[FusionFMPipeline], object]]] = [
        (f"float16 weights, compute_dtype={dtype!r}", half_precision(dtype)) for dtype in (None, "fp32", "bf16")]
    cases += [("a closed PIL image", lambda pipe: pipe(closed, vi, task="IVF", output_type="pt")),
              ("load_image(a folder)", lambda pipe: load_image(folder)),
              ("load_image(a symbolic link loop)", lambda pipe: load_image(loop))]
    return cases


def folder_cases(model: str | None, root: Path) -> int:
    """The folder CLI on a folder with a good pair and entries it cannot fuse; returns the number of failures (an
    entry left out without being reported, or exit status 0)."""
    shoot = root / "shoot"
    shoot.mkdir()
    for name in ("TNO_07_ir.png", "TNO_07_vi.png"):
        (shoot / name).write_bytes((EXAMPLE / name).read_bytes())
    odd = {"190008_ir.jpg": "a folder named like an image file", "loop_ir.png": "a symbolic link loop",
           "lonely_vi.png": "no partner lonely_ir.*"}
    (shoot / "190008_ir.jpg").mkdir()
    (shoot / "loop_ir.png").symlink_to(shoot / "loop_ir.png")
    (shoot / "lonely_vi.png").write_bytes((EXAMPLE / "TNO_07_vi.png").read_bytes())
    command = [sys.executable, "-m", "fusionfm.fuse", "--task", "IVF", "--input", str(shoot), "--out",
               str(root / "fused"), "--no-progress", "--threads", "1", *(["--model", model] if model else [])]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    failures = 0
    for entry, reason in odd.items():
        reported = f"{shoot / entry}: {reason}" in result.stderr
        failures += not reported
        print(f"| CLI | {entry} | {'reported: ' + reason if reported else 'FAIL: not reported'} | "
              f"{time.perf_counter() - started:.2f} |")
    failures += result.returncode == 0
    print(f"| CLI | exit status | {result.returncode}{' (FAIL: 0)' if result.returncode == 0 else ''} | |")
    return failures


def run_api_case(pipe: FusionFMPipeline, case: dict) -> str:
    case = dict(case)
    a, b = case.pop("a"), case.pop("b")
    if isinstance(a, Path):
        a = load_image(a)
        b = PIL.Image.open(EXAMPLE / "TNO_07_vi.png").convert("L").resize(a.size)
    task, output_type = case.pop("task", "IVF"), case.pop("output_type", "pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FusionInputWarning)
        result = pipe(a, b, task=task, output_type=output_type, **case).images
    fused = torch.as_tensor(np.asarray(result[0])) if output_type != "pt" else result[0]
    if float(fused.max()) == 0 and float(torch.as_tensor(np.asarray(b, np.float32)).max()) > 0:
        return "FAIL: all-black result"
    notes = "; ".join(str(w.message)[:70] for w in caught if issubclass(w.category, FusionInputWarning))
    return f"ok {tuple(fused.shape[-2:])}" + (f" (warning: {notes})" if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-app", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = FusionFMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    failures = 0
    print("| where | case | outcome | seconds |\n|---|---|---|---:|")
    with tempfile.TemporaryDirectory() as folder:
        files = image_files(Path(folder))
        for name, case in api_cases(files):
            started = time.perf_counter()
            try:
                outcome = run_api_case(pipe, case)
            except (ValueError, TypeError, FileNotFoundError) as error:
                outcome = f"{type(error).__name__}: {error}"
            except Exception as error:  # anything else is a defect
                outcome = f"FAIL {type(error).__name__}: {error}"
            failures += outcome.startswith("FAIL")
            print(f"| API | {name} | {outcome[:160].replace('|', '/')} | {time.perf_counter() - started:.2f} |",
                  flush=True)
        for name, call in special_cases(files):
            started = time.perf_counter()
            try:
                call(pipe)
                outcome = "FAIL: accepted"
            except (ValueError, TypeError, FileNotFoundError) as error:
                outcome = f"{type(error).__name__}: {error}"
            except Exception as error:
                outcome = f"FAIL {type(error).__name__}: {error}"
            failures += outcome.startswith("FAIL")
            print(f"| API | {name} | {outcome[:160].replace('|', '/')} | {time.perf_counter() - started:.2f} |",
                  flush=True)
        failures += folder_cases(args.model, Path(folder))
        if not args.no_app:
            failures += app_battery(args.model, files)
    print(f"\n{failures} failures")
    sys.exit(1 if failures else 0)


def app_battery(model: str | None, files: dict[str, Path]) -> int:
    """The uploads and settings through a served app's /fuse; returns the number of failures."""
    from gradio_client import Client, handle_file

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import serve_app

    failures = 0
    ir, vi = str(EXAMPLE / "TNO_07_ir.png"), str(EXAMPLE / "TNO_07_vi.png")
    cases = [(f"upload {name}", ("IVF", str(path), vi, 1, 0, True)) for name, path in files.items()]
    cases += [(f"steps={value!r}", ("IVF", ir, vi, value, 0, False)) for value in (None, "abc", 0, 9, 1.5)]
    cases += [(f"resolution={value!r}", ("IVF", ir, vi, 1, value, False)) for value in (None, -5, 10**6)]
    cases += [(f"task={value!r}", (value, ir, vi, 1, 0, False)) for value in (None, "Panorama", "ivf", " IVF ",
                                                                               "MIF")]
    cases += [("resolution=1 (below the network's minimum)", ("IVF", ir, vi, 1, 1, False)),
              ("natural_exposure=True for IVF", ("IVF", ir, vi, 1, 0, False, False, True))]
    with serve_app() as url:
        client = Client(url, verbose=False)
        for name, (task, path_a, path_b, *settings) in cases:
            started = time.perf_counter()
            try:
                _, _, _, timing, _ = client.predict(task, handle_file(path_a), handle_file(path_b), *settings,
                                                  api_name="/fuse")
                outcome = "ok" + (" (" + timing.split("Note: ", 1)[1][:90] + ")" if "Note: " in timing else "")
            except Exception as error:
                message = str(error)
                outcome = ("FAIL " if "upstream Gradio app has raised" in message else "error: ") + message
            failures += outcome.startswith("FAIL")
            print(f"| app | {name} | {outcome[:160].replace('|', '/')} | {time.perf_counter() - started:.2f} |",
                  flush=True)
    return failures


if __name__ == "__main__":
    main()
