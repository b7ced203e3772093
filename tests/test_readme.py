"""The README's Python example runs as written, on a real pair, with a saved pipeline folder."""

from __future__ import annotations

import re

import PIL.Image
from conftest import DATA, REPO_ROOT, make_pipeline


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    example = re.search(r"## Use from Python\s+```python\n(.*?)```", readme, re.S).group(1)
    make_pipeline().save_pretrained(tmp_path / "model")
    ir_path = DATA / "IVF/RoadScene/test/ir/FLIR_06995.jpg"
    vi_path = DATA / "IVF/RoadScene/test/vi/FLIR_06995.jpg"
    for name, path in (("ir.png", ir_path), ("vi.png", vi_path)):
        (tmp_path / name).symlink_to(path)
    example = example.replace("path/to/fusionfm-model", str(tmp_path / "model"))
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    fused = PIL.Image.open(tmp_path / "fused.png")
    assert fused.size == PIL.Image.open(ir_path).size and fused.mode == "RGB"
