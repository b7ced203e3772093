"""The README's Python example runs as written, on a real pair, with the bundled model."""

from __future__ import annotations

import re

import PIL.Image
from conftest import DATA, REPO_ROOT


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSIONFM_MODEL", raising=False)
    readme = (REPO_ROOT / "README.md").read_text()
    example = re.search(r"## Use from Python\s+```python\n(.*?)```", readme, re.S).group(1)
    ir_path = DATA / "IVF/RoadScene/test/ir/FLIR_06995.jpg"
    vi_path = DATA / "IVF/RoadScene/test/vi/FLIR_06995.jpg"
    for name, path in (("ir.png", ir_path), ("vi.png", vi_path)):
        (tmp_path / name).symlink_to(path)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    fused = PIL.Image.open(tmp_path / "fused.png")
    assert fused.size == PIL.Image.open(ir_path).size and fused.mode == "RGB"
