"""The app's exposure: where it listens, what it shares, and where it writes (fast: the tiny pipeline, no server)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, load_app_module, make_pipeline

app_module = load_app_module()


def test_it_listens_on_loopback_and_shares_nothing_unless_asked(monkeypatch):
    for name in ("FUSIONFM_HOST", "FUSIONFM_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = app_module.parse_args([])
    assert args.host == "127.0.0.1" and args.share is False
    assert app_module.parse_args(["--share"]).share is True


def test_results_stay_in_the_apps_own_folder_whatever_the_upload_is_called(tmp_path):
    app = app_module.FusionApp(make_pipeline())
    try:
        source = REPO_ROOT / "examples" / "MIF-PET"
        nested = tmp_path / "a" / "b"
        nested.mkdir(parents=True)
        # Upload names with parent-folder parts and dots, as a client could send them.
        tricky_a = tmp_path / "..evil..png"
        shutil.copy(next(source.glob("*_mri.png")), tricky_a)
        tricky_b = next(source.glob("*_pet.png"))
        fused_path, *_ = app.fuse("MIF-PET", str(nested / ".." / ".." / tricky_a.name), str(tricky_b))
        written = [path for path in app.results_dir.rglob("*") if path.is_file()]
        assert written and all(path.resolve().is_relative_to(app.results_dir.resolve()) for path in written)
        assert fused_path.startswith(str(app.results_dir))
        assert not list(tmp_path.glob("fused_*")) and not list(source.parent.glob("fused_*"))
    finally:
        app.close()
    assert not app.results_dir.exists()


@pytest.mark.parametrize("value", [None, "abc", 1.5, True, -1, 9])
def test_bad_step_values_get_the_apps_message(value):
    with pytest.raises(app_module.gr.Error, match="The number of flow steps must"):
        app_module.whole_number(value, "The number of flow steps", 1, app_module.MAX_STEPS)


def test_the_result_folder_goes_when_the_app_stops(tmp_path):
    probe = (f"import sys; sys.path.insert(0, {str(REPO_ROOT / 'tests')!r}); "
             "from conftest import load_app_module, make_pipeline; "
             "app = load_app_module().FusionApp(make_pipeline()); print(app.results_dir)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = Path(result.stdout.split()[-1])
    assert folder.name.startswith("fusionfm-app-") and not folder.exists()
