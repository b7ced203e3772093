"""FusionImageProcessor and load_image: canonical tensors from every input kind, padding, output types."""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
from conftest import DATA

from fusionfm import FusionImageProcessor, FusionInputWarning, load_image
from fusionfm.image_processor import ImageTooLargeError


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


@pytest.mark.parametrize("margin", [0, 16])
@pytest.mark.parametrize("size", [(257, 383), (2, 2), (31, 64), (64, 64)])
def test_pad_and_crop_are_exact(processor, size, margin):
    images = torch.rand(2, 1, *size)
    padded, box = processor.pad_to_multiple(images, 16, margin)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert padded.shape[-2] >= size[0] + 2 * margin and padded.shape[-1] >= size[1] + 2 * margin
    assert box == (margin, margin, *size)
    torch.testing.assert_close(processor.crop(padded, box), images, atol=0, rtol=0)


def test_the_border_margin_mirrors_the_image():
    images = torch.rand(1, 1, 40, 50)
    padded, _ = FusionImageProcessor().pad_to_multiple(images, 16, 16)
    # Row 16 is the first image row; row 15 mirrors row 1 (reflection without repeating the edge).
    torch.testing.assert_close(padded[..., 15, 16:66], images[..., 1, :], atol=0, rtol=0)
    torch.testing.assert_close(padded[..., 16:56, 15], images[..., :, 1], atol=0, rtol=0)


@pytest.mark.parametrize("margin", [-1, 2.5, True, "16"])
def test_a_bad_border_margin_is_refused(margin):
    with pytest.raises(ValueError, match="border_margin"):
        FusionImageProcessor(border_margin=margin)


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
    with pytest.raises(FileNotFoundError, match="missing.png is not there"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="is a folder; pass the path of an image file"):
        load_image(tmp_path)
    (tmp_path / "loop_a.png").symlink_to(tmp_path / "loop_b.png")
    (tmp_path / "loop_b.png").symlink_to(tmp_path / "loop_a.png")
    with pytest.raises(FileNotFoundError, match="loop_a.png is a symbolic link loop"):
        load_image(tmp_path / "loop_a.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match="dangling.png is a broken symbolic link"):
        load_image(tmp_path / "dangling.png")
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
    assert "composited on black" in processor.input_notices(PIL.Image.new("RGBA", (4, 4)), "Visible")[0]
    assert "min-max" in processor.input_notices(PIL.Image.new("I;16", (4, 4)), "Infrared")[0]
    assert "CMYK" in processor.input_notices(PIL.Image.new("CMYK", (4, 4)), "Visible")[0]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparency_is_composited_on_black_and_announced(mode):
    """A transparent region's hidden colour must not reach the fusion (it used to show as a magenta band)."""
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = (255, 0, 255)  # magenta under full transparency
    rgba[:, 4:, :3] = 200
    rgba[:, 4:, 3] = 255  # the right half opaque gray
    rgba[:, 6:, 3] = 128  # half transparent at the far right
    image = PIL.Image.fromarray(rgba, "RGBA").convert(mode)
    with pytest.warns(FusionInputWarning, match="composited on black"):
        (tensor,) = FusionImageProcessor().to_tensor_list(image, "image_b")
    assert tensor.shape == (1, 6, 8)  # gray content stays one channel
    assert tensor[0, :, :4].max() == 0
    torch.testing.assert_close(tensor[0, :, 4:6], torch.full((6, 2), 200 / 255))
    torch.testing.assert_close(tensor[0, :, 6:], torch.full((6, 2), 200 / 255 * 128 / 255), atol=2 / 255, rtol=0)


def test_numpy_and_tensor_alpha_is_composited_too():
    rgba = torch.rand(4, 5, 5)
    rgba[3] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # arrays and tensors carry no mode to announce
        (tensor,) = FusionImageProcessor().to_tensor_list(rgba)
    torch.testing.assert_close(tensor, rgba[:3] * 0.5)


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_the_first_frame_of_an_animation_or_multi_page_file_is_used_and_announced(tmp_path, suffix):
    frames = [PIL.Image.new("L", (8, 8), value) for value in (10, 120, 240)]
    path = tmp_path / f"frames{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_image(path)
    with pytest.warns(FusionInputWarning, match="has 3 frames .*frame 1 is used"):
        (tensor,) = FusionImageProcessor().to_tensor_list(image, "Visible")
    assert abs(float(tensor.mean()) * 255 - 10) < 1.5


def test_a_constant_sixteen_bit_frame_keeps_its_level():
    frame = np.full((4, 4), 30000, np.uint16)
    with pytest.warns(FusionInputWarning, match="uint16 pixels.*min-max"):
        (tensor,) = FusionImageProcessor().to_tensor_list(frame)
    torch.testing.assert_close(tensor, torch.full((1, 4, 4), 30000 / 65535))


def test_wide_integer_arrays_are_announced():
    array = np.arange(48, dtype=np.int64).reshape(6, 8) * 1000
    with pytest.warns(FusionInputWarning, match="image_a has int64 pixels, read as more than 8 bits: it is scaled by "
                                                "its own min-max range"):
        (tensor,) = FusionImageProcessor().to_tensor_list(array, "image_a")
    assert float(tensor.min()) == 0 and float(tensor.max()) == 1


@pytest.mark.parametrize("empty", [np.zeros((0, 0, 3), np.uint8), np.zeros((5, 0), np.uint8),
                                   torch.zeros(3, 0, 4), torch.zeros(1, 4, 0)])
def test_empty_images_get_a_clear_error(empty):
    with pytest.raises(ValueError, match="is empty"):
        FusionImageProcessor().to_tensor_list(empty, "image_a")


def test_load_image_refuses_too_many_pixels_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    PIL.Image.new("L", (3000, 2000), 7).save(path)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("decoded before the size check")

    with monkeypatch.context() as patch:
        patch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(ImageTooLargeError, match=r"wide.png is 3000x2000 = 6.0 megapixels, above the limit of 5 "):
            load_image(path, max_pixels=5_000_000)
    assert load_image(path, max_pixels=6_000_000).size == (3000, 2000)


def test_an_exif_rotated_image_is_read_as_viewers_show_it(tmp_path):
    stored = np.zeros((20, 40), np.uint8)
    stored[:, :10] = 255  # a bright left band, as stored
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "rotated.jpg"
    PIL.Image.fromarray(stored).save(path, exif=exif, quality=100)
    processor = FusionImageProcessor()
    for image in (PIL.Image.open(path), load_image(path)):  # a PIL image straight from a file, and our loader
        (tensor,) = processor.to_tensor_list(image)
        assert tensor.shape == (1, 40, 20)  # upright: 40 high, 20 wide
        assert tensor[0, :10].mean() > 0.9 and tensor[0, -10:].mean() < 0.1  # the band is now at the top


def test_float_images_beyond_the_unit_range_follow_the_high_bit_depth_rule(tmp_path):
    values = np.array([[0.0, 100.0], [200.0, 400.0]], np.float32)
    path = tmp_path / "float.tif"
    PIL.Image.fromarray(values).save(path)
    notice = r"F \(32-bit float\); it is read as it is if within \[0, 1\], else scaled by its own min-max"
    with pytest.warns(FusionInputWarning, match=notice):
        (tensor,) = FusionImageProcessor().to_tensor_list(load_image(path))
    torch.testing.assert_close(tensor[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    in_range = PIL.Image.fromarray(values / 800)
    with pytest.warns(FusionInputWarning):
        (tensor,) = FusionImageProcessor().to_tensor_list(in_range)
    torch.testing.assert_close(tensor[0], torch.from_numpy(values / 800))


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    PIL.Image.new("L", (14000, 14000)).save(path)  # 196 megapixels, a small file
    with pytest.raises(ImageTooLargeError, match="bomb.png is too large to open safely"):
        load_image(path)
