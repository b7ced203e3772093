"""fusionfm.atomic: files and folders appear whole or not at all."""

from __future__ import annotations

import csv

import numpy as np
import PIL.Image
import pytest
import torch

from fusionfm import FusionUNet, build_unet
from fusionfm.atomic import (
    save_png_atomic,
    save_pretrained_portable,
    staged_folder,
    write_csv_atomic,
    write_text_atomic,
)
from fusionfm.image_processor import to_pil


def test_text_csv_and_png_are_written_without_leftovers(tmp_path):
    write_text_atomic(tmp_path / "a" / "note.txt", "hello")
    write_csv_atomic(tmp_path / "rows.csv", [{"x": 1, "y": 2, "ignored": 3}], ["x", "y"])
    write_csv_atomic(tmp_path / "plain.csv", [["h1", "h2"], [1, 2]])
    image = torch.linspace(0, 1, 12).reshape(1, 3, 4)
    save_png_atomic(to_pil(image), tmp_path / "gray.png")
    assert (tmp_path / "a" / "note.txt").read_text() == "hello"
    assert list(csv.DictReader((tmp_path / "rows.csv").open())) == [{"x": "1", "y": "2"}]
    assert list(csv.reader((tmp_path / "plain.csv").open())) == [["h1", "h2"], ["1", "2"]]
    with PIL.Image.open(tmp_path / "gray.png") as png:
        assert png.mode == "L" and np.asarray(png)[0].tolist() == [0, 23, 46, 70]
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_failed_write_leaves_the_old_folder(tmp_path):
    folder = tmp_path / "pipeline"
    with staged_folder(folder) as partial:
        (partial / "weights").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(folder) as partial:
        (partial / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (folder / "weights").read_text() == "old"
    with staged_folder(folder) as partial:
        (partial / "weights").write_text("new")
    assert (folder / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]


def test_a_model_saved_again_in_place_keeps_no_local_path(tmp_path):
    build_unet("tiny").save_pretrained(tmp_path / "first")
    loaded = FusionUNet.from_pretrained(tmp_path / "first")
    assert str(loaded.config._name_or_path) == str(tmp_path / "first")  # what diffusers would write back
    with staged_folder(tmp_path / "first") as staging:
        save_pretrained_portable(loaded, staging)
    assert "_name_or_path" not in (tmp_path / "first" / "config.json").read_text()
    again = FusionUNet.from_pretrained(tmp_path / "first")
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor)
