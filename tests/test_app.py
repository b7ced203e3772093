"""The Gradio app through its /fuse API (gradio_client against an in-process server) on the bundled examples."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
from conftest import DATA, REPO_ROOT, fusion_choice, load_app_module, make_pipeline, serve_app
from gradio_client import Client, handle_file

from fusionfm import FusionFMPipeline, get_task, load_image
from fusionfm.color import is_gray
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.tasks import ColorPolicy

pytestmark = pytest.mark.slow  # serves the app and fuses through gradio_client

app_module = load_app_module()
MAX_SIDE = 1200  # above every bundled example; the size-limit test uses a bigger image


MAX_UPLOAD_PIXELS, MAX_FILE_SIZE = 3_000_000, 5 * 1024 * 1024  # small limits so the tests stay light


@pytest.fixture(scope="module")
def client():
    with serve_app(max_side=MAX_SIDE, max_upload_pixels=MAX_UPLOAD_PIXELS, max_file_size=MAX_FILE_SIZE) as url:
        yield Client(url, verbose=False)


def _fuse(client: Client, task: str, path_a, path_b, steps: int = 1, resolution: int = 0, resize: bool = False,
          keep_contrast: bool = False, natural_exposure: bool = False):
    return client.predict(task, handle_file(str(path_a)) if path_a else None,
                          handle_file(str(path_b)) if path_b else None, steps, resolution, resize, keep_contrast,
                          natural_exposure, api_name="/fuse")


def _luminance(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("L"), dtype=np.float64)


def _expected_mode(task: str, path_a, path_b) -> str:
    processor = FusionImageProcessor()
    gray_a, gray_b = is_gray(processor.load(path_a)), is_gray(processor.load(path_b))
    colour_from_b_only = get_task(task).color_policy == ColorPolicy.CHROMA_FROM_B
    return "L" if (gray_b if colour_from_b_only else gray_a and gray_b) else "RGB"


EXAMPLES = app_module.example_rows()


def test_example_tables_are_per_task_family_with_their_own_headers_all_on_one_page():
    demo = app_module.build_demo(app_module.FusionApp(make_pipeline()))
    tables = [block for block in demo.blocks.values() if type(block).__name__ == "Dataset"]
    headers = {tuple(table.headers) for table in tables}
    assert headers == {("Task", "Infrared", "Visible"), ("Task", "MRI", "CT, PET or SPECT"),
                       ("Task", "Under-exposed", "Over-exposed"), ("Task", "Near focus", "Far focus")}
    assert all(len(table.samples) <= table.samples_per_page for table in tables)  # no second page
    assert sum(len(table.samples) for table in tables) == len(EXAMPLES)


def test_examples_cover_every_task_of_the_selector():
    assert {row[0] for row in EXAMPLES} == {value for _, value in app_module.TASK_CHOICES}
    assert len(EXAMPLES) >= 2 * len(app_module.TASK_CHOICES)
    readme = (REPO_ROOT / "examples" / "README.md").read_text()
    for _, path_a, path_b in EXAMPLES:
        assert path_a.split("examples/")[1] in readme and path_b.split("examples/")[1] in readme


@pytest.mark.parametrize("row", EXAMPLES, ids=[f"{row[0]}-{row[1].rsplit('/', 1)[1]}" for row in EXAMPLES])
def test_fuse_every_example_pair(client, row):
    task, path_a, path_b = row
    fused_path, (slider_input, slider_fused), table, timing, download = _fuse(client, task, path_a, path_b)
    fused = PIL.Image.open(fused_path)
    source = PIL.Image.open(path_a)
    assert fused.format == "PNG" and fused.size == source.size
    assert fused.mode == _expected_mode(task, path_a, path_b)
    choice = fusion_choice(_luminance(path_a), _luminance(path_b), task).numpy()  # medical pairs: mostly black
    rgb, rgb_a, rgb_b = (np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.float64)
                         for path in (fused_path, path_a, path_b))
    # Not a copy of an input or of their mean, in colour (an MRI-SPECT fusion's luminance is near the MRI's).
    for other in (rgb_a, rgb_b, (rgb_a + rgb_b) / 2):
        assert np.abs(rgb - other).mean(axis=-1)[choice].mean() > 2.0
    assert PIL.Image.open(slider_input).size == fused.size and _luminance(slider_fused).shape == rgb.shape[:2]
    assert [row[0] for row in table["data"]] == ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
    assert all(np.isfinite(row[1]) and np.isfinite(row[2]) for row in table["data"])
    assert "(1 step)" in timing and "Note:" not in timing
    assert PIL.Image.open(download).size == fused.size


def test_more_steps_and_a_processing_resolution(client):
    task, path_a, path_b = EXAMPLES[0]
    fused_path, _, _, timing, _ = _fuse(client, task, path_a, path_b, steps=4, resolution=128)
    assert PIL.Image.open(fused_path).size == PIL.Image.open(path_a).size  # fused at 128, returned at input size
    assert "(4 steps)" in timing


def _error(client: Client, *args, endpoint=None, **kwargs) -> str:
    """The message a call of ``endpoint`` (default: /fuse) fails with; never a stack trace."""
    with pytest.raises(Exception) as caught:
        (endpoint or _fuse)(client, *args, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


def test_missing_images(client):
    task, path_a, path_b = EXAMPLES[0]
    assert "The Infrared image is missing" in _error(client, task, None, path_b)
    assert "The Visible image is missing" in _error(client, task, path_a, None)


def test_different_sizes_are_refused_then_resized_on_request(client):
    small = [row for row in EXAMPLES if row[0] == "MIF-PET"][0]
    large = [row for row in EXAMPLES if row[0] == "MEF"][0]
    message = _error(client, "MEF", large[1], small[2])
    assert "differ in size" in message and "Resize" in message
    fused_path, _, _, timing, _ = _fuse(client, "MEF", large[1], small[2], resize=True)
    assert PIL.Image.open(fused_path).size == PIL.Image.open(large[1]).size
    assert "was resized from 256x256" in timing


def test_unreadable_files(client, tmp_path):
    task, path_a, path_b = EXAMPLES[0]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((REPO_ROOT / "examples" / "MIF-PET").glob("*.png").__next__().read_bytes()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for bad in (truncated, text):
        message = _error(client, task, path_a, bad)
        assert "The Visible image could not be read" in message and bad.name in message


def test_keeping_the_sources_contrast_for_a_pair_and_a_stack(client):
    """The box fuses with every detail gain at 1 (the sources' own contrast), as the library's ``detail_gain=1``
    does, instead of the model's learned gains (an exposure pair's are below 1); old API calls without the setting
    keep the model's gains."""
    task, path_a, path_b = next(row for row in EXAMPLES if row[0] == "MEF")
    pipe = FusionFMPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    images = [load_image(path_a), load_image(path_b)]
    gains = {False: None, True: 1.0}
    library = {keep: np.asarray(pipe(*images, task=task, detail_gain=gain).images[0].convert("L"), dtype=np.float64)
               for keep, gain in gains.items()}
    assert np.abs(library[True] - library[False]).max() >= 5  # the learned gains are not 1 here
    results = {keep: _fuse(client, task, path_a, path_b, keep_contrast=keep) for keep in gains}
    for keep, result in results.items():
        assert np.abs(_luminance(result[0]) - library[keep]).max() <= 1
    assert "(1 step)" in results[False][3] and "(1 step, the sources' own contrast)" in results[True][3]
    old_call = client.predict(task, handle_file(path_a), handle_file(path_b), 1, 0, False, api_name="/fuse")[0]
    np.testing.assert_array_equal(_luminance(old_call), _luminance(results[False][0]))
    frames = [path_a, path_b, path_a]
    stack = pipe([load_image(path) for path in frames], task=task, detail_gain=1.0).images[0].convert("L")
    kept = _fuse_frames(client, task, frames, keep_contrast=True)[0]
    assert np.abs(_luminance(kept) - np.asarray(stack, dtype=np.float64)).max() <= 1
    assert "keep_contrast must be true or false, got 'yes'" in _error(client, task, path_a, path_b,
                                                                     keep_contrast="yes")


def test_natural_exposure_for_an_exposure_pair_and_nothing_else(client):
    """Ticked, an exposure pair comes out darker (blended by well-exposedness, not towards the brighter source);
    for another task it is refused with the library's message; sent as two frames, the same as the pair."""
    task, path_a, path_b = next(row for row in EXAMPLES if row[0] == "MEF")
    results = [_fuse(client, task, path_a, path_b, natural_exposure=natural) for natural in (False, True)]
    default, natural = (_luminance(result[0]) for result in results)
    assert natural.mean() < default.mean() - 20
    assert "(1 step)" in results[0][3] and "(1 step, natural exposure)" in results[1][3]
    frames = _fuse_frames(client, task, [path_a, path_b], natural_exposure=True)
    assert np.abs(_luminance(frames[0]) - natural).max() <= 1 and "natural exposure" in frames[3]
    other, other_a, other_b = EXAMPLES[0]
    assert other != "MEF"  # refused as the library refuses it (the page shows the box for MEF only)
    assert "applies to multi-exposure fusion (task 'MEF') only" in _error(client, other, other_a, other_b,
                                                                          natural_exposure=True)
    assert "natural_exposure must be true or false, got 'yes'" in _error(client, task, path_a, path_b,
                                                                        natural_exposure="yes")


def test_bad_settings_and_task(client):
    task, path_a, path_b = EXAMPLES[0]
    assert "The number of flow steps must be from 1 to 8, got 0" in _error(client, task, path_a, path_b, steps=0)
    assert "must be from 1 to 8, got 9" in _error(client, task, path_a, path_b, steps=9)
    assert "The processing resolution (0 = input size) must be from 0 to 1200, got -5" in _error(
        client, task, path_a, path_b, resolution=-5)
    assert "Unknown task 'Panorama'. Known tasks: IVF" in _error(client, "Panorama", path_a, path_b)
    # What the API lets through to the app (no value, text, fractions) gets the app's own message.
    assert "The number of flow steps must be a whole number from 1 to 8, got None" in _error(
        client, task, path_a, path_b, steps=None)
    assert "got 'abc'" in _error(client, task, path_a, path_b, steps="abc")
    assert "got 1.5" in _error(client, task, path_a, path_b, steps=1.5)
    assert "The processing resolution (0 = input size) must be a whole number" in _error(
        client, task, path_a, path_b, resolution=None)
    assert "task must be a string such as 'IVF', got NoneType" in _error(client, None, path_a, path_b)
    # Task names as the library reads them: any case, spaces around, the MIF class.
    for name in ("ivf", " IVF ", "MIF"):
        assert "Fused" in _fuse(client, name, path_a, path_b)[3]


def test_oversized_images_are_downscaled_with_a_notice(client, tmp_path):
    _, path_a, path_b = [row for row in EXAMPLES if row[0] == "MIF-SPECT"][0]
    big_a, big_b = tmp_path / "big_mri.png", tmp_path / "big_spect.png"
    for source, target in ((path_a, big_a), (path_b, big_b)):
        PIL.Image.open(source).resize((1500, 1500), PIL.Image.BICUBIC).save(target)
    fused_path, _, _, timing, _ = _fuse(client, "MIF-SPECT", big_a, big_b)
    assert PIL.Image.open(fused_path).size == (MAX_SIDE, MAX_SIDE)
    assert f"above this app's limit of {MAX_SIDE}" in timing


def test_uploads_beyond_the_pixel_budget_or_the_file_size_are_refused(client, tmp_path):
    _, path_a, path_b = EXAMPLES[0]
    # 4000 x 4000 of one colour: a tiny file that would decode to 48 MB; refused from its header.
    flat = tmp_path / "flat.png"
    PIL.Image.new("RGB", (4000, 4000), (90, 90, 90)).save(flat)
    assert flat.stat().st_size < 200_000
    message = _error(client, "IVF", path_a, flat)
    assert "The Visible image is too large for this app" in message and "16.0 megapixels" in message
    assert "limit of 3 megapixels" in message
    noise = tmp_path / "noise.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (1600, 1600, 3), np.uint8)).save(noise)
    assert noise.stat().st_size > MAX_FILE_SIZE
    with pytest.raises(Exception, match="(?i)file.*(too large|size)"):
        _fuse(client, "IVF", path_a, noise)


def test_sixteen_bit_thermal_and_transparent_inputs_keep_working(client, tmp_path):
    _, path_ir, path_vis = [row for row in EXAMPLES if row[0] == "IVF" and "RoadScene" in row[1]][0]
    ir = np.asarray(PIL.Image.open(path_ir).convert("L"), dtype=np.uint16) * 200 + 3000  # a 16-bit thermal range
    thermal = tmp_path / "thermal16.png"
    PIL.Image.fromarray(ir).save(thermal)
    assert PIL.Image.open(thermal).mode == "I;16"
    visible = tmp_path / "visible_rgba.png"
    PIL.Image.open(path_vis).convert("RGBA").save(visible)
    fused_path, _, _, timing, _ = _fuse(client, "IVF", thermal, visible)
    fused = PIL.Image.open(fused_path)
    assert fused.mode == "RGB" and fused.size == PIL.Image.open(path_ir).size
    assert "I;16 (more than 8 bits)" in timing and "composited on black" in timing
    # The 16-bit image reached the model intact: scaled by its min-max range it equals the 8-bit original's
    # stretch, so the result matches fusing a stretched 8-bit copy.
    stretched = tmp_path / "thermal8.png"
    stretch = (ir - ir.min()) / (ir.max() - ir.min()) * 255
    PIL.Image.fromarray(np.round(stretch).astype(np.uint8)).save(stretched)
    reference, *_ = _fuse(client, "IVF", stretched, visible)
    difference = np.abs(_luminance(fused_path) - _luminance(reference))
    # 8-bit rounding of the stretched copy, amplified a little by bf16; a mishandled 16-bit input (clipped or
    # wrapped to 8 bits) is off by tens of grey levels on average.
    assert difference.mean() < 1.0 and difference.max() <= 16, (difference.mean(), difference.max())


def test_twenty_concurrent_calls_return_their_own_results(client):
    rows = [EXAMPLES[i] for i in (0, 3, 7, 10)]
    expected = {row[1]: _luminance(_fuse(client, *row)[0]) for row in rows}
    calls = [rows[i % len(rows)] for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda row: _fuse(client, *row)[0], calls))
    for row, fused_path in zip(calls, results, strict=True):
        assert np.array_equal(_luminance(fused_path), expected[row[1]])


def test_memory_stays_flat_over_many_mixed_calls():
    """The small version of benchmarks/app_memory.py: two rounds of every example pair at its size, downscaled
    with two steps, and upscaled 2x; resident size after the second round within 10 % of after the first."""
    rounds = 2 * 3 * len(EXAMPLES)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "app_memory.py"), "--calls",
                             str(rounds), "--warmup", str(rounds // 2)], capture_output=True, text=True, timeout=1200,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    growth = float(re.search(r"growth after the first \d+ calls: ([+-][\d.]+) %", result.stdout).group(1))
    assert growth <= 10.0, result.stdout


def _frames(tmp_path, count: int, size_of_last=None) -> list:
    """``count`` frames of a real Waterloo exposure sequence (repeated if it is shorter), small copies."""
    sources = sorted((DATA / "MEF" / "Waterloo" / "sequences" / "Memorial").glob("*.png"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = PIL.Image.open(sources[index % len(sources)]).reduce(4)
        if size_of_last and index == count - 1:
            image = image.resize(size_of_last)
        paths.append(tmp_path / f"frame_{index:02d}.png")
        image.save(paths[-1])
    return paths


def _fuse_frames(client: Client, task: str, paths, resolution: int = 0, resize: bool = False,
                 keep_contrast: bool = False, natural_exposure: bool = False):
    return client.predict(task, [handle_file(str(path)) for path in paths], resolution, resize, keep_contrast,
                          natural_exposure, api_name="/fuse_frames")


def test_a_five_frame_bracket_is_fused_and_a_forty_frame_one_refused(client, tmp_path):
    paths = _frames(tmp_path, 5)
    fused_path, _, table, timing, _ = _fuse_frames(client, "MEF", paths)
    fused = PIL.Image.open(fused_path)
    assert fused.size == PIL.Image.open(paths[0]).size and fused.mode == "RGB"
    assert "Fused 5 frames" in timing
    rows = {row[0]: row[1:] for row in table["data"]}
    assert rows["MEF-SSIM"][0] > rows["MEF-SSIM"][1]  # above the plain mean of the frames
    message = _error(client, "MEF", _frames(tmp_path / "many", 40), endpoint=_fuse_frames)
    assert "Upload 2 to 16 frames of one scene; got 40" in message


def test_frames_of_mixed_sizes_are_refused_then_resized_on_request(client, tmp_path):
    paths = _frames(tmp_path, 3, size_of_last=(64, 48))
    message = _error(client, "MFF", paths, endpoint=_fuse_frames)
    assert "The frames differ in size" in message and "frame 3 (frame_02.png) is 64x48" in message
    assert "Resize to the first image" in message
    fused_path, *_ = _fuse_frames(client, "MFF", paths, resize=True)
    assert PIL.Image.open(fused_path).size == PIL.Image.open(paths[0]).size
    assert "takes two images" in _error(client, "IVF", paths, endpoint=_fuse_frames)



@pytest.mark.slow
def test_background_compilation_serves_eager_until_ready(real_pair, compile_cache, monkeypatch):
    monkeypatch.setenv("FUSIONFM_COMPILE_CACHE", str(compile_cache))
    app = load_app_module()
    pipe = make_pipeline()
    compile_now, go = pipe.compile_unet, threading.Event()
    monkeypatch.setattr(pipe, "compile_unet", lambda: go.wait(60) and compile_now())  # compiles when told to
    pair = [image.resize((640, 480)) for image in real_pair("MEF")]
    eager = pipe(*pair, task="MEF", compute_dtype="bf16", output_type="np").images[0]
    thread = app.compile_in_background(pipe)
    during = pipe(*pair, task="MEF", compute_dtype="bf16", output_type="np").images[0]  # does not wait
    assert thread.is_alive() and pipe.compiled_dtype is None
    np.testing.assert_array_equal(during, eager)
    go.set()
    thread.join(timeout=900)
    assert not thread.is_alive() and pipe.compiled_dtype is not None
    after = pipe(*pair, task="MEF", compute_dtype="bf16", output_type="np").images[0]
    assert np.abs(after - eager).mean() <= 2e-3
