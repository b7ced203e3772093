"""FusionImageProcessor and load_image: canonical tensors from every input kind, padding, output types."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import DATA

from fusionfm import FusionImageProcessor, load_image


@pytest.fixture()
def processor() -> FusionImageProcessor:
    return FusionImageProcessor()


def test_gray_stored_as_rgb_becomes_one_channel(processor, real_pair):
    mri, ct = real_pair("MIF-CT")
    assert ct.mode == "RGB"
    (tensor,) = processor.to_tensor_list(ct)
    assert tensor.shape == (1, ct.size[1], ct.size[0]) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor[0].numpy(), np.asarray(ct.convert("L"), np.float32) / 255, atol=1 / 255)


def test_colour_rgba_palette_and_tensor_agree(processor, real_pair):
    _, vi = real_pair("IVF")
    (rgb,) = processor.to_tensor_list(vi)
    assert rgb.shape[0] == 3
    (rgba,) = processor.to_tensor_list(vi.convert("RGBA"))
    torch.testing.assert_close(rgba, rgb)
    (from_tensor,) = processor.to_tensor_list(torch.from_numpy(np.array(vi)).permute(2, 0, 1))
    torch.testing.assert_close(from_tensor, rgb)
    (palette,) = processor.to_tensor_list(vi.convert("P", palette=PIL.Image.Palette.ADAPTIVE))
    assert palette.shape == rgb.shape and (palette - rgb).abs().mean() < 0.03


def test_sixteen_bit(real_pair):
    ir, _ = real_pair("IVF")
    codes = (7000 + np.asarray(ir, dtype=np.uint16) * 8).astype(np.uint16)
    image = PIL.Image.fromarray(codes)
    assert image.mode == "I;16"
    (stretched,) = FusionImageProcessor().to_tensor_list(image)
    assert stretched.min() == 0 and stretched.max() == 1
    (full,) = FusionImageProcessor(high_bit_depth="full_range").to_tensor_list(codes)
    torch.testing.assert_close(full[0], torch.from_numpy(codes / 65535.0).float())


def test_big_endian_sixteen_bit(processor):
    codes = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(">u2")
    image = PIL.Image.frombytes("I;16B", (8, 8), codes.tobytes())
    (tensor,) = processor.to_tensor_list(image)
    torch.testing.assert_close(tensor[0], torch.from_numpy(codes.astype(np.float32) / codes.max()))


def test_batches_and_lists(processor):
    batch = torch.rand(3, 3, 10, 12)
    assert len(processor.to_tensor_list(batch)) == 3
    assert len(processor.to_tensor_list([np.zeros((10, 12), np.uint8), batch[0]])) == 2
    assert len(processor.to_tensor_list(np.zeros((2, 10, 12, 3), np.uint8))) == 2


@pytest.mark.parametrize("size", [(257, 383), (2, 2), (31, 64), (64, 64)])
def test_pad_and_crop_are_exact(processor, size):
    images = torch.rand(2, 1, *size)
    padded, original = processor.pad_to_multiple(images, 16)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert original == size
    torch.testing.assert_close(processor.crop(padded, original), images, atol=0, rtol=0)


def test_processing_size_keeps_aspect(processor):
    assert processor.processing_size((480, 640), 320) == (240, 320)
    assert processor.processing_size((640, 480), 320) == (320, 240)
    assert processor.processing_size((480, 640), None) == (480, 640)
    assert processor.processing_size((480, 640), 0) == (480, 640)


def test_postprocess_types(processor):
    gray, colour = torch.rand(1, 5, 6), torch.rand(3, 5, 6)
    pil = processor.postprocess([gray, colour], "pil")
    assert [image.mode for image in pil] == ["L", "RGB"] and pil[0].size == (6, 5)
    assert processor.postprocess([gray, colour], "np").shape == (2, 5, 6, 3)
    assert processor.postprocess([gray, gray], "pt").shape == (2, 1, 5, 6)
    mixed = processor.postprocess([gray, torch.rand(3, 7, 6)], "np")
    assert isinstance(mixed, list) and mixed[1].shape == (7, 6, 3)


def test_processor_load_names_the_file(tmp_path, processor):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ValueError, match="Could not read .*broken.jpg"):
        processor.load(broken)
    ir = processor.load(DATA / "IVF/RoadScene/test/ir/FLIR_06995.jpg")
    assert ir.shape == (1, 212, 502)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No image file"):
        load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(ValueError, match="Could not read .*broken.png as an image"):
        load_image(broken)


def test_load_image_keeps_the_mode_and_truncated_files_fail(tmp_path, real_pair):
    ir, _ = real_pair("IVF")
    path = tmp_path / "ir16.png"
    PIL.Image.fromarray((np.asarray(ir, np.uint16) * 257).astype(np.uint16)).save(path)
    assert load_image(path).mode == "I;16"
    truncated = tmp_path / "truncated.png"
    ir.save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image(truncated)


def test_settings_are_config_and_save_with_the_pipeline(tmp_path):
    from conftest import make_pipeline

    from fusionfm import FusionFMPipeline

    with pytest.raises(ValueError, match="high_bit_depth must be"):
        FusionImageProcessor(high_bit_depth="bogus")
    pipe = make_pipeline()
    with pytest.raises(ValueError, match="high_bit_depth must be"):
        pipe.image_processor.high_bit_depth = "bogus"
    pipe.image_processor.high_bit_depth = "full_range"
    assert pipe.image_processor.config.high_bit_depth == "full_range"
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = FusionFMPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.image_processor.high_bit_depth == "full_range"
    frame = np.array([[1000, 3000], [2000, 65535]], dtype=np.uint16)
    (tensor,) = loaded.image_processor.to_tensor_list(frame)
    torch.testing.assert_close(tensor[0, 0, 0], torch.tensor(1000 / 65535))


def test_input_notices_name_the_unusual_modes():
    processor = FusionImageProcessor()
    assert processor.input_notices(PIL.Image.new("RGB", (4, 4)), "Visible") == []
    assert "alpha channel is ignored" in processor.input_notices(PIL.Image.new("RGBA", (4, 4)), "Visible")[0]
    assert "min-max" in processor.input_notices(PIL.Image.new("I;16", (4, 4)), "Infrared")[0]
    assert "CMYK" in processor.input_notices(PIL.Image.new("CMYK", (4, 4)), "Visible")[0]


@pytest.mark.parametrize("empty", [np.zeros((0, 0, 3), np.uint8), np.zeros((5, 0), np.uint8),
                                   torch.zeros(3, 0, 4), torch.zeros(1, 4, 0)])
def test_empty_images_get_a_clear_error(empty):
    with pytest.raises(ValueError, match="is empty"):
        FusionImageProcessor().to_tensor_list(empty, "image_a")
