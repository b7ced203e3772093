"""The README's Python example runs as written, on a real pair, with the bundled model."""

from __future__ import annotations

import re

import numpy as np
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
    # The bundled model's IVF fusion of that pair: the library's own call gives the same pixels, and neither input.
    from fusionfm import FusionFMPipeline, load_image

    pipe = FusionFMPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    expected = np.asarray(pipe(load_image(ir_path), load_image(vi_path), task="IVF").images[0], dtype=np.float64)
    written = np.asarray(fused, dtype=np.float64)
    assert np.abs(written - expected).max() <= 1
    for source in (ir_path, vi_path):
        assert np.abs(written - np.asarray(PIL.Image.open(source).convert("RGB"), dtype=np.float64)).mean() > 2


def test_the_caps_the_readme_states_are_the_bundled_models():
    """The README's caps and minimum size are those the bundled pipeline applies."""
    from fusionfm import FusionFMPipeline

    readme = (REPO_ROOT / "README.md").read_text()
    pipe = FusionFMPipeline.from_pretrained()
    stated_pixels = re.search(r"`max_processing_pixels` \((\d+) million", readme).group(1)
    assert int(stated_pixels) * 1_000_000 == pipe.config.max_processing_pixels
    stated_steps = re.search(r"`max_num_inference_steps` \((\d+)\)", readme).group(1)
    assert int(stated_steps) == pipe.config.max_num_inference_steps
    assert f"({pipe.min_processing_side} pixels a side for the bundled network" in readme


def _bash_block(readme: str, section: str) -> list[str]:
    """The command lines of the first bash block under the README's ``## section`` heading."""
    body = re.search(rf"^## {section}\n(.*?)(?=^## )", readme, re.S | re.M).group(1)
    return re.search(r"```bash\n(.*?)```", body, re.S).group(1).strip().splitlines()


def test_the_install_run_and_test_commands_are_there_and_ci_runs_them():
    """The README's Install and Test commands are exactly what .ci/run runs, and Run starts the app."""
    readme = (REPO_ROOT / "README.md").read_text()
    ci = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == _bash_block(readme, "Install") + _bash_block(readme, "Test")
    assert _bash_block(readme, "Run") == ["python app.py"]
