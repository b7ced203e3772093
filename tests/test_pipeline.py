"""FusionFMPipeline on real pairs: sizes, modes, colour policy, batching, the flow, seeds, save/load, errors,
detail gains."""

from __future__ import annotations

import pickle

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from conftest import make_pipeline, pil_to_tensor, trained_like_default_pipe

from fusionfm import FusionFMPipeline, get_task
from fusionfm.color import chroma, luminance
from fusionfm.finishing import favour_the_lit_source, keep_shared_extremes
from fusionfm.pipeline_fusionfm import NonFiniteResultError

FP32 = dict(compute_dtype="fp32")


FP32 = dict(compute_dtype="fp32")


def _hand_flow(pipe: FusionFMPipeline, y_a: torch.Tensor, y_b: torch.Tensor, task: str, steps: int) -> torch.Tensor:
    """The Euler integration written out independently of the pipeline, then the pipeline's finishing against the
    sources (:mod:`fusionfm.finishing`): (1, 1, H, W) in [0, 1]."""
    height, width = y_a.shape[-2:]
    multiple, margin = pipe.unet.size_multiple, pipe.image_processor.config.border_margin
    a, b = (F.pad(y, (margin,) * 4, mode="reflect") for y in (y_a, y_b))
    pad = (0, (-a.shape[-1]) % multiple, 0, (-a.shape[-2]) % multiple)
    a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
    x = (a + b) / 2
    task_id = torch.tensor([get_task(task).class_id])
    with torch.no_grad():
        for k in range(steps):
            t = torch.tensor([k / steps])
            x = x + (1.0 / steps) * pipe.unet(x, a, b, t, task_id)
    fused = x[..., margin : margin + height, margin : margin + width].clamp(0, 1)
    if get_task(task).black_is_empty:
        fused = favour_the_lit_source(fused, y_a, y_b)
    return keep_shared_extremes(fused, [y_a, y_b])


def test_odd_size_comes_back_at_its_size(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    box = (10, 5, 10 + 383, 5 + 257)  # 257 x 383 (H x W)
    fused = tiny_pipe(ir.crop(box), vi.crop(box), task="IVF").images[0]
    assert fused.size == (383, 257)
    assert fused.mode == "RGB"
    # The padding to the network's size multiple is cut off again where it was added: the fusion lines up with its
    # sources pixel for pixel, better than when shifted by two pixels either way.
    y = luminance(pil_to_tensor(fused))[0, 0]
    mean = sum(luminance(pil_to_tensor(image.crop(box).convert("RGB")))[0, 0] for image in (ir, vi)) / 2
    def error(dy: int, dx: int) -> float:
        return float((y[2 + dy : 250 + dy, 2 + dx : 376 + dx] - mean[2:250, 2:376]).abs().mean())
    assert error(0, 0) < min(error(dy, dx) for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)))


@pytest.mark.parametrize("key,task", [("IVF", "IVF"), ("MIF-PET", "MIF-PET"), ("MEF", "MEF"), ("MFF", "MFF")])
def test_every_task_gives_a_non_trivial_image_of_the_input_size(tiny_pipe, real_pair, key, task):
    a, b = real_pair(key)
    out = tiny_pipe(a, b, task=task, output_type="pt", **FP32).images
    assert out.shape[-2:] == (a.size[1], a.size[0])
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    y = luminance(out)
    mean = (luminance(pil_to_tensor(a.convert("RGB"))) + luminance(pil_to_tensor(b.convert("RGB")))) / 2
    # The fusion moves away from x0, the sources' mean (little where a and b agree, as in a multi-focus pair; the
    # trained model's real examples are checked in test_bundled_model.py).
    assert (y - mean).abs().mean() > 1e-3


def test_one_step_equals_x0_plus_velocity(tiny_pipe, real_pair):
    # TNO: both gray, so the output is the fused luminance itself.
    ir, vi = real_pair("IVF-gray")
    ir, vi = ir.crop((0, 0, 203, 151)), vi.crop((0, 0, 203, 151))
    out = tiny_pipe(ir, vi, task="IVF", output_type="pt", **FP32).images
    expected = _hand_flow(tiny_pipe, pil_to_tensor(ir.convert("L")), pil_to_tensor(vi.convert("L")), "IVF", steps=1)
    assert out.shape == expected.shape == (1, 1, 151, 203)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [2, 4])
def test_n_steps_follow_the_euler_rule(tiny_pipe, real_pair, steps):
    mri, ct = real_pair("MIF-CT")
    out = tiny_pipe(mri, ct, task="MIF-CT", num_inference_steps=steps, output_type="pt", **FP32).images
    expected = _hand_flow(tiny_pipe, pil_to_tensor(mri.convert("L")), pil_to_tensor(ct.convert("L")), "MIF-CT", steps)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)  # float32 summation order, over several steps
    one_step = tiny_pipe(mri, ct, task="MIF-CT", output_type="pt", **FP32).images
    assert (out - one_step).abs().max() > 1e-3  # more steps really integrate differently


def test_ivf_keeps_the_visible_chroma(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    out = tiny_pipe(ir, vi, task="IVF", output_type="pt", **FP32).images
    assert out.shape[1] == 3
    difference = (chroma(out) - chroma(pil_to_tensor(vi))).abs().amax(dim=1)
    # Exact wherever no RGB channel was clipped (clipping out-of-gamut colours shifts chroma).
    in_gamut = ((out > 0) & (out < 1)).all(dim=1)
    assert in_gamut.float().mean() > 0.3
    assert difference[in_gamut].max() < 1e-4


def test_mif_pet_takes_chroma_from_pet_and_ct_stays_gray(tiny_pipe, real_pair):
    mri, pet = real_pair("MIF-PET")
    fused_pet = tiny_pipe(mri, pet, task="MIF-PET").images[0]
    assert fused_pet.mode == "RGB"
    fused = pil_to_tensor(fused_pet)
    difference = (chroma(fused) - chroma(pil_to_tensor(pet))).abs().amax(dim=1)
    in_gamut = ((fused > 0.02) & (fused < 0.98)).all(dim=1)
    assert in_gamut.float().mean() > 0.1
    assert difference[in_gamut].max() < 3 / 255  # 8-bit rounding of the PNG-ready output
    mri, ct = real_pair("MIF-CT")
    assert mri.mode == ct.mode == "RGB"  # stored as RGB, gray content
    assert tiny_pipe(mri, ct, task="MIF-CT").images[0].mode == "L"


def test_gray_plus_gray_gives_gray(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF-gray")
    assert tiny_pipe(ir, vi, task="IVF").images[0].mode == "L"
    assert tiny_pipe(ir.convert("L"), vi.convert("L"), task="MEF").images[0].mode == "L"


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_input_modes(tiny_pipe, real_pair, mode):
    ir, vi = real_pair("IVF")
    if mode == "I;16":
        # A raw 16-bit thermal frame uses a narrow code range; min-max scaling recovers the 8-bit image.
        codes = 7000 + np.asarray(ir, dtype=np.uint16) * 8
        ir_mode = PIL.Image.fromarray(codes.astype(np.uint16))
        assert ir_mode.mode == "I;16"
        stretched = np.asarray(ir, dtype=np.float32)
        stretched = (stretched - stretched.min()) / (stretched.max() - stretched.min())
        reference = tiny_pipe(stretched, vi, task="IVF", output_type="np", **FP32).images
        out = tiny_pipe(ir_mode, vi, task="IVF", output_type="np", **FP32).images
        np.testing.assert_allclose(out, reference, atol=1e-5)
        return
    vi_mode = vi.convert(mode) if mode != "P" else vi.convert("P", palette=PIL.Image.Palette.ADAPTIVE)
    fused = tiny_pipe(ir, vi_mode, task="IVF").images[0]
    assert fused.size == ir.size
    assert fused.mode == ("L" if mode == "L" else "RGB")
    if mode == "RGBA":  # alpha is dropped: same result as RGB
        rgb = tiny_pipe(ir, vi, task="IVF").images[0]
        assert np.array_equal(np.asarray(fused), np.asarray(rgb))


def test_numpy_and_torch_inputs_match_pil(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    reference = tiny_pipe(ir, vi, task="IVF", output_type="np", **FP32).images
    ir_array, vi_array = np.array(ir), np.array(vi)
    from_uint8 = tiny_pipe(ir_array, vi_array, task="IVF", output_type="np", **FP32).images
    from_float = tiny_pipe(ir_array / 255.0, vi_array.astype(np.float32) / 255.0, task="IVF", output_type="np",
                           **FP32).images
    from_torch = tiny_pipe(torch.from_numpy(ir_array), torch.from_numpy(vi_array).permute(2, 0, 1), task="IVF",
                           output_type="np", **FP32).images
    for other in (from_uint8, from_float, from_torch):
        np.testing.assert_allclose(other, reference, atol=1e-5)


def test_batch_equals_one_pair_at_a_time(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    under, over = real_pair("MEF")
    crops = [(0, 0, 300, 200), (50, 10, 350, 210)]
    images_a = [ir.crop(c) for c in crops] + [under]
    images_b = [vi.crop(c) for c in crops] + [over]
    tasks = ["IVF", "IVF", "MEF"]
    batched = tiny_pipe(images_a, images_b, task=tasks, batch_size=2, output_type="pt", **FP32).images
    assert isinstance(batched, list) and len(batched) == 3  # two sizes: not stackable
    for index in range(3):
        single = tiny_pipe(images_a[index], images_b[index], task=tasks[index], output_type="pt", **FP32).images[0]
        torch.testing.assert_close(batched[index], single, atol=1e-5, rtol=0)


def test_stacked_batch_output_types(tiny_pipe, real_pair):
    mri, pet = real_pair("MIF-PET")
    mri_ct, ct = real_pair("MIF-CT")
    pt = tiny_pipe([mri, mri_ct], [pet, ct], task=["MIF-PET", "MIF-CT"], output_type="pt", batch_size=2).images
    assert pt.shape == (2, 3, 256, 256)  # one colour result: the gray one is repeated to RGB
    np_images = tiny_pipe([mri_ct], [ct], task="MIF-CT", output_type="np").images
    assert np_images.shape == (1, 256, 256, 1) and np_images.dtype == np.float32
    # The same fusion whatever the output type (and whatever else is in the batch), within bf16 rounding.
    np.testing.assert_allclose(np_images[0, :, :, 0], pt[1, 0].numpy(), atol=2 / 255)
    tensor_batch = torch.stack([torch.from_numpy(np.array(ct)).permute(2, 0, 1)] * 2)
    assert tiny_pipe(tensor_batch, tensor_batch, task="MIF-CT", output_type="pt").images.shape == (2, 1, 256, 256)


def test_same_seed_same_output_for_the_gaussian_coupling(real_pair):
    pipe = make_pipeline(coupling="gaussian")
    ir, vi = real_pair("IVF")

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return pipe(ir, vi, task="IVF", generator=generator, output_type="np", **FP32).images

    first, again, other = run(0), run(0), run(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_processing_resolution(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")  # 502 x 212
    matched = tiny_pipe(ir, vi, task="IVF", processing_resolution=128).images[0]
    assert matched.size == ir.size
    small = tiny_pipe(ir, vi, task="IVF", processing_resolution=128, match_input_resolution=False).images[0]
    assert small.size == (128, round(212 * 128 / 502))
    full = tiny_pipe(ir, vi, task="IVF", output_type="np", **FP32).images
    low = tiny_pipe(ir, vi, task="IVF", processing_resolution=128, output_type="np", **FP32).images
    assert np.abs(full - low).mean() > 1e-3  # it really processed at another size


def test_resize_b_to_a(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    fused = tiny_pipe(ir, vi.resize((251, 106)), task="IVF", resize_b_to_a=True).images[0]
    assert fused.size == ir.size


def test_bf16_is_close_to_fp32(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    fp32 = tiny_pipe(ir, vi, task="IVF", output_type="np", compute_dtype="fp32").images
    bf16 = tiny_pipe(ir, vi, task="IVF", output_type="np", compute_dtype="bf16").images
    assert np.abs(fp32 - bf16).mean() < 0.02


def test_save_then_load_gives_the_same_output(tmp_path, real_pair):
    pipe = make_pipeline()
    ir, vi = real_pair("IVF")
    before = pipe(ir, vi, task="IVF", output_type="np", **FP32).images
    pipe.save_pretrained(tmp_path / "model")
    saved = sorted(p.relative_to(tmp_path / "model").as_posix() for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert saved == ["image_processor/processor_config.json", "model_index.json", "scheduler/scheduler_config.json",
                     "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    loaded = FusionFMPipeline.from_pretrained(tmp_path / "model")
    loaded.set_progress_bar_config(disable=True)
    after = loaded(ir, vi, task="IVF", output_type="np", **FP32).images
    for key, tensor in pipe.unet.state_dict().items():
        assert torch.equal(tensor, loaded.unet.state_dict()[key]), key
    assert loaded.scheduler.config.coupling == "mean"
    # Same weights; the loaded tensors' memory layout (channels-last on bf16 CPUs) picks other fp32 conv kernels
    # (luminance differences up to ~1.4e-5, which the colour step can amplify to ~1.4e-4 near a saturated colour;
    # one thread).
    np.testing.assert_allclose(before, after, atol=1e-3)


def test_pickled_weights_are_never_loaded(tmp_path):
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "model", safe_serialization=False)
    assert (tmp_path / "model/unet/diffusion_pytorch_model.bin").is_file()
    with pytest.raises(Exception, match="safetensors"):
        FusionFMPipeline.from_pretrained(tmp_path / "model")


class _Trap:
    """Unpickling this creates the file ``marker``: proof that a pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.pt",
                                  "unet/weights.pkl", "pytorch_model.bin"])
def test_a_pickle_in_a_model_folder_never_runs(tmp_path, name):
    """Beside the safetensors weights a pickle is ignored; without them the folder is refused, unread."""
    make_pipeline().save_pretrained(tmp_path / "model")
    marker = tmp_path / "pickle-ran"
    (tmp_path / "model" / name).write_bytes(pickle.dumps(_Trap(str(marker))))
    loaded = FusionFMPipeline.from_pretrained(tmp_path / "model")
    assert loaded.unet.config.pyramid_levels == 3 and not marker.exists()
    (tmp_path / "model/unet/diffusion_pytorch_model.safetensors").unlink()
    if name.startswith("unet/diffusion_pytorch_model"):
        with pytest.raises(Exception, match="safetensors"):
            FusionFMPipeline.from_pretrained(tmp_path / "model")
    else:
        with pytest.raises(Exception, match="(?i)no file named|safetensors|not found"):
            FusionFMPipeline.from_pretrained(tmp_path / "model")
    assert not marker.exists()


BAD_INPUTS = [
    (dict(task="XYZ"), "Unknown task 'XYZ'. Known tasks: IVF, MIF, MIF-CT"),
    (dict(num_inference_steps=0), "num_inference_steps must be a whole number >= 1"),
    (dict(num_inference_steps=1.5), "num_inference_steps must be a whole number >= 1"),
    (dict(num_inference_steps=torch.tensor(1.0)), "num_inference_steps must be a whole number >= 1"),
    (dict(batch_size=0), "batch_size must be a whole number >= 1"),
    (dict(batch_size=np.bool_(True)), "batch_size must be a whole number >= 1"),
    (dict(output_type="jpg"), "output_type must be one of pil, np, pt"),
    (dict(processing_resolution=-5), r"processing_resolution must be a whole number >= 0 \(0: the input's own size"),
    (dict(processing_resolution=1), "processing_resolution=1 is below this model's minimum of 4 pixels"),
    (dict(compute_dtype="int8"), "compute_dtype must be"),
    (dict(image_b="size"), r"image_a is 212x502 but image_b is 100x200 \(HxW\).*resize_b_to_a=True"),
    (dict(image_a=np.zeros((0, 5), np.uint8)), r"image_a is empty \(shape \(0, 5, 1\)\)"),
    (dict(image_a=np.zeros((1, 1), np.uint8), image_b=np.zeros((1, 1), np.uint8)), "image_a is 1x1 pixels"),
    (dict(image_a=torch.full((1, 8, 8), float("nan"))), "image_a contains NaN or infinite values"),
    (dict(image_a=torch.full((1, 8, 8), float("inf"))), "image_a contains NaN or infinite values"),
    (dict(image_a=np.full((8, 8), 3.0)), r"float images must be in \[0, 1\]"),
    (dict(image_a=torch.zeros(2, 2, 3, 8, 8)), "expected \\(H, W\\), \\(C, H, W\\) or \\(B, C, H, W\\)"),
    (dict(image_a=np.zeros((3, 8, 8), np.uint8)), "channels first\\? numpy images are \\(H, W, C\\)"),
    (dict(image_a=torch.zeros(8, 8, 3)), "channels last\\? tensors are \\(C, H, W\\)"),
    (dict(image_a=torch.zeros(1, 8, 8, dtype=torch.int64)), "tensors must be uint8"),
    (dict(image_a=np.zeros((8, 8), bool)), "image_a is boolean"),
    (dict(image_a="ir.png"), "image_a is a path"),
    (dict(image_a=None), "Both image_a and image_b are required"),
    (dict(image_a=[], image_b=[]), "image_a is an empty list"),
    (dict(image_a="list"), "both as single images or both as lists"),
    (dict(task=["IVF", "MEF"]), "Got 2 tasks for 1 pairs"),
    (dict(detail_gain=3.0), r"detail_gain must be None \(the model's own\) or a number from 0.5 to 2"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_inputs_get_clear_errors(tiny_pipe, real_pair, overrides, message):
    ir, vi = real_pair("IVF")
    kwargs = dict(image_a=ir, image_b=vi, task="IVF")
    kwargs.update(overrides)
    if kwargs["image_b"] == "size":
        kwargs["image_b"] = vi.resize((200, 100))
    if isinstance(kwargs["image_a"], str) and kwargs["image_a"] == "list":
        kwargs["image_a"] = [ir]
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_pipe(**kwargs)


def test_the_default_precision_is_visible_in_the_config_and_can_be_set_at_load(tmp_path):
    pipe = make_pipeline()
    assert pipe.config.default_compute_dtype == "auto"
    pipe.save_pretrained(tmp_path / "pipe")
    full = FusionFMPipeline.from_pretrained(tmp_path / "pipe", default_compute_dtype="fp32")
    assert full.config.default_compute_dtype == "fp32"
    assert full._resolve_compute_dtype(None) == torch.float32
    assert not full.unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="default_compute_dtype must be 'auto' or one of"):
        FusionFMPipeline.from_pretrained(tmp_path / "pipe", default_compute_dtype="int8")


def test_fp16_on_the_cpu_is_refused_before_any_work(real_pair):
    pipe = make_pipeline()
    ir, vi = real_pair("IVF")
    for dtype in ("fp16", torch.float16):
        with pytest.raises(ValueError, match="fp16 is not supported on the CPU.*'bf16'.*'fp32'"):
            pipe(ir, vi, task="IVF", compute_dtype=dtype)


def test_numpy_and_torch_integers_are_whole_numbers(tiny_pipe, real_pair):
    ir, vi = real_pair("IVF")
    reference = tiny_pipe(ir, vi, task="IVF", processing_resolution=128, output_type="pt", **FP32).images
    for integer in (np.int64, np.uint16, torch.tensor):
        fused = tiny_pipe(ir, vi, task="IVF", num_inference_steps=integer(1), processing_resolution=integer(128),
                          batch_size=integer(2), tile_size=integer(0), output_type="pt", **FP32).images
        torch.testing.assert_close(fused, reference, atol=0, rtol=0)


def test_a_processing_size_below_the_network_minimum_is_refused(real_pair):
    """The bundled network works on 32-pixel blocks and a 5-level pyramid: shrinking below 32 pixels a side used to
    return a full-size smear of colour; smaller inputs are still fused at their own size."""
    pipe = FusionFMPipeline.from_pretrained()
    assert pipe.min_processing_side == 32
    ir, vi = real_pair("IVF")
    for resolution in (1, 31):
        with pytest.raises(ValueError, match=f"processing_resolution={resolution} is below this model's minimum of 32"):
            pipe(ir, vi, task="IVF", processing_resolution=resolution)
    with pytest.raises(ValueError, match=r"would fuse of 502x212 pixels at 64x27, below this model's minimum of 32"):
        pipe(ir, vi, task="IVF", processing_resolution=64)
    with pytest.raises(ValueError, match="below this model's minimum of 32"):
        pipe([ir, vi, ir], task="MFF", processing_resolution=64)  # stacks too
    small_a, small_b = ir.crop((0, 0, 24, 20)), vi.crop((0, 0, 24, 20))
    assert pipe(small_a, small_b, task="IVF").images[0].size == (24, 20)


def test_half_precision_weights_on_the_cpu_are_refused_and_nan_results_raise(real_pair):
    """float16 weights on a CPU used to give an all-black image with compute_dtype='fp32', a torch error with 'bf16'
    and a message about an fp16 the caller never asked for by default; and no result was checked for NaN."""
    ir, vi = real_pair("IVF")
    pipe = make_pipeline()
    pipe.to(torch.float16)
    for compute_dtype in (None, "fp32", "bf16"):
        with pytest.raises(ValueError, match="The U-Net's weights are float16, which the CPU cannot compute with.*"
                                             r"pipe.to\(torch.float32\)"):
            pipe(ir, vi, task="IVF", compute_dtype=compute_dtype)
    pipe.to(torch.float32)
    assert pipe(ir, vi, task="IVF", output_type="pt").images.isfinite().all()
    with torch.no_grad():
        next(pipe.unet.parameters()).fill_(float("nan"))  # damaged weights
    for call in (lambda: pipe(ir, vi, task="IVF"), lambda: pipe([ir, vi, ir], task="MFF")):
        with pytest.raises(NonFiniteResultError, match="NaN or infinite values, so no image is returned"):
            call()


def test_a_closed_image_is_named(tiny_pipe, real_pair, tmp_path):
    ir, vi = real_pair("IVF")
    ir.save(tmp_path / "ir.png")
    with PIL.Image.open(tmp_path / "ir.png") as image:
        pass  # closed on leaving the block, never loaded
    with pytest.raises(ValueError, match="image_a is a closed PIL image.*image.copy"):
        tiny_pipe(image, vi, task="IVF")


def test_too_many_steps_or_pixels_are_refused_before_any_work(tiny_pipe, real_pair, monkeypatch):
    ir, vi = real_pair("IVF")

    def no_work(*args, **kwargs):
        raise AssertionError("the U-Net ran before the request was refused")

    monkeypatch.setattr(tiny_pipe, "_fuse_luminance", no_work)
    with pytest.raises(ValueError, match=r"num_inference_steps=1000000000 is above this pipeline's cap of 100"):
        tiny_pipe(ir, vi, task="IVF", num_inference_steps=10**9)
    message = r"Fusing at \d+x20000 pixels is \d+\.\d megapixels, above this pipeline's cap of 64\. "
    with pytest.raises(ValueError, match=message):
        tiny_pipe(ir, vi, task="IVF", processing_resolution=20000)


def test_the_caps_can_be_raised(tiny_pipe, real_pair, tmp_path):
    ir, vi = real_pair("IVF")
    ir, vi = ir.crop((0, 0, 64, 48)), vi.crop((0, 0, 64, 48))
    tiny_pipe.register_to_config(max_num_inference_steps=2, max_processing_pixels=64 * 48)
    assert tiny_pipe(ir, vi, task="IVF", num_inference_steps=2).images[0].size == (64, 48)
    with pytest.raises(ValueError, match="cap of 2"):
        tiny_pipe(ir, vi, task="IVF", num_inference_steps=3)
    with pytest.raises(ValueError, match="megapixels"):
        tiny_pipe(ir, vi, task="IVF", processing_resolution=65)
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    loaded = FusionFMPipeline.from_pretrained(tmp_path / "pipe", max_num_inference_steps=500)
    assert (loaded.config.max_num_inference_steps, loaded.config.max_processing_pixels) == (500, 64 * 48)
    with pytest.raises(ValueError, match="max_processing_pixels must be a positive integer"):
        FusionFMPipeline.from_pretrained(tmp_path / "pipe", max_processing_pixels=0)


def test_black_and_white_that_every_source_shares_stay_so(exposure_bracket, monkeypatch):
    """Real frames with one patch black and one white in every frame, as a stack of three and as a pair: the
    band-wise blend carries grey into both patches (spill of their surroundings' coarse bands); the pipeline keeps
    them black and white."""
    pipe = trained_like_default_pipe()
    frames = [np.asarray(frame).copy() for frame in exposure_bracket]
    for frame in frames:
        frame[10:30, 20:50], frame[60:80, 90:120] = 0, 255
    frames = [PIL.Image.fromarray(frame) for frame in frames]

    def patches(images):
        fused = (pipe(*images, task="MEF", output_type="pt", **FP32).images[0] * 255).round()
        return fused[:, 10:30, 20:50], fused[:, 60:80, 90:120]

    for images in ([frames], frames[:2]):
        black, white = patches(images)
        assert black.max() == 0 and white.min() == 255
        with monkeypatch.context() as patch:
            patch.setattr("fusionfm.pipeline_fusionfm.keep_shared_extremes", lambda fused_y, sources_y: fused_y)
            black, white = patches(images)
        assert black.max() > 0 and white.min() < 255


@pytest.mark.parametrize("task", ["IVF", "MIF-CT", "MEF", "MFF"])
def test_detail_gain_one_gives_a_source_fused_with_itself_back(exposure_bracket, task):
    """A real frame fused with itself, as a pair and as a stack of three: at detail_gain=1 every pyramid level is
    the frame's own, whatever the weights, so the frame comes back; at the model's gains (and at 1.5) it does not."""
    pipe = trained_like_default_pipe()
    frame = pil_to_tensor(exposure_bracket[1])
    calls = [dict(image_a=frame, image_b=frame)]
    if task in ("MEF", "MFF"):
        calls.append(dict(image_a=[frame] * 3))
    for call in calls:
        faithful, own, stronger = (pipe(**call, task=task, output_type="pt", detail_gain=gain, **FP32).images[0]
                                   for gain in (1.0, None, 1.5))
        assert (faithful - frame).abs().max() < 1e-4
        assert (own - frame).abs().mean() > 1e-3
        assert (stronger - frame).abs().mean() > (own - frame).abs().mean()


@pytest.mark.parametrize("gain", [0, 0.4, 2.5, float("nan"), "1", True])
def test_detail_gains_the_head_cannot_apply_are_refused(real_pair, exposure_bracket, gain):
    pipe = trained_like_default_pipe()
    ir, vi = real_pair("IVF")
    for call in (dict(image_a=ir, image_b=vi, task="IVF"), dict(image_a=exposure_bracket, task="MEF")):
        with pytest.raises(ValueError, match=r"detail_gain must be None \(the model's own\) or a number from 0.5 to 2"):
            pipe(**call, detail_gain=gain)
