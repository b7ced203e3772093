"""python -m fusionfm.fuse: folders of pairs and of frame stacks, bad files skipped, resume after a kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import (
    DATA,
    REPO_ROOT,
    make_pipeline,
    run_one_then_two_killed_and_resumed,
)

from fusionfm.folders import find_jobs, plan_folder
from fusionfm.fuse import main
from fusionfm.metrics.fusion import spatial_frequency
from fusionfm.tasks import get_task
from fusionfm.threads import default_threads


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_pipeline().save_pretrained(folder)
    return folder


def _brackets(root, names=("Balloons", "Candle", "Cave")):
    """Small copies of real Waterloo exposure sequences, one sub-folder each."""
    for name in names:
        for path in sorted((DATA / "MEF" / "Waterloo" / "sequences" / name).glob("*.png"))[:4]:
            (root / name).mkdir(parents=True, exist_ok=True)
            PIL.Image.open(path).reduce(4).save(root / name / path.name)
    return root


def test_pairs_by_file_name_and_by_modality_folders(model, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(REPO_ROOT / "examples" / "IVF", flat)
    assert [job.name for job in find_jobs(flat, get_task("IVF"))] == ["RoadScene_FLIR_08021", "TNO_07"]
    assert main(["--task", "IVF", "--input", str(flat), "--out", str(tmp_path / "out"), "--model", str(model),
                 "--no-progress"]) == 0
    tno = PIL.Image.open(tmp_path / "out" / "TNO_07.png")
    assert tno.size == PIL.Image.open(flat / "TNO_07_ir.png").size
    nested = tmp_path / "nested"
    for modality in ("ir", "vi"):
        (nested / modality).mkdir(parents=True)
        shutil.copy(flat / f"TNO_07_{modality}.png", nested / modality / "TNO_07.png")
    assert [job.name for job in find_jobs(nested, get_task("IVF"))] == ["TNO_07"]


def test_stacks_with_a_bad_file_skip_it_and_fuse_the_rest(model, tmp_path, capsys):
    brackets = _brackets(tmp_path / "brackets")
    (brackets / "Cave" / "00.png").write_bytes(b"")  # a broken frame
    out = tmp_path / "out"
    assert main(["--task", "MEF", "--input", str(brackets), "--out", str(out), "--model", str(model),
                 "--no-progress"]) == 1
    assert sorted(path.name for path in out.iterdir()) == ["Balloons.png", "Candle.png"]
    captured = capsys.readouterr()
    assert "2 fused, 0 already done, 1 failed" in captured.out
    assert "failed: Cave: Could not read" in captured.err and "00.png" in captured.err
    with pytest.raises(SystemExit):
        main(["--task", "IVF"])
    assert main(["--task", "IVF", "--input", str(brackets), "--out", str(out), "--model", str(model)]) == 2
    assert "Nothing to fuse" in capsys.readouterr().err


def test_a_killed_run_resumes_without_redoing_finished_results(model, tmp_path):
    brackets = _brackets(tmp_path / "brackets", names=("Balloons", "BelgiumHouse", "Cadik", "Candle", "Cave",
                                                       "ChineseGarden", "Farmhouse", "House"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fusionfm.fuse", "--task", "MEF", "--input", str(brackets), "--out", str(out),
               "--model", str(model), "--no-progress", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("*.png")}
    assert 2 <= len(before) < 8, "the run should have been killed part way"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{8 - len(before)} fused, {len(before)} already done, 0 failed" in result.stdout
    assert {path.name for path in out.glob("*.png")} == {f"{name}.png" for name in
                                                         ("Balloons", "BelgiumHouse", "Cadik", "Candle", "Cave",
                                                          "ChineseGarden", "Farmhouse", "House")}
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in before.items())
    assert not list(out.glob(".*.tmp"))


def test_detail_gain_reaches_every_fusion_and_a_bad_one_stops_before_any(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    shutil.copytree(REPO_ROOT / "examples" / "MFF", pairs)
    spatial_frequencies = {}
    for gain in ("1.3", "1"):
        out = tmp_path / f"out_{gain}"
        assert main(["--task", "MFF", "--input", str(pairs), "--out", str(out), "--no-progress", "--detail-gain",
                     gain]) == 0
        images = [torch.from_numpy(np.asarray(PIL.Image.open(path).convert("L"), dtype=np.float32))
                  for path in sorted(out.glob("*.png"))]
        spatial_frequencies[gain] = [float(spatial_frequency(image)) for image in images]
    assert len(spatial_frequencies["1"]) == len(list(pairs.glob("*_a.*")))
    # Gains above 1 sharpen every detail level; 1 keeps the sources' contrast.
    assert all(sharp > faithful * 1.1 for sharp, faithful in zip(*spatial_frequencies.values(), strict=True))
    capsys.readouterr()
    out = tmp_path / "out_bad"
    assert main(["--task", "MFF", "--input", str(pairs), "--out", str(out), "--detail-gain", "3"]) == 2
    assert "detail_gain must be None (the model's own) or a number from 0.5 to 2" in capsys.readouterr().err
    assert not out.exists()


def test_natural_exposure_reaches_exposure_pairs_and_is_refused_for_other_tasks(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    shutil.copytree(REPO_ROOT / "examples" / "MEF", pairs)
    brightness = {}
    for extra in ([], ["--natural-exposure"]):
        out = tmp_path / f"out{len(extra)}"
        assert main(["--task", "MEF", "--input", str(pairs), "--out", str(out), "--no-progress", *extra]) == 0
        brightness[len(extra)] = [np.asarray(PIL.Image.open(path).convert("L"), dtype=np.float64).mean()
                                  for path in sorted(out.glob("*.png"))]
    assert len(brightness[1]) == 2
    assert all(natural < default - 20 for default, natural in zip(brightness[0], brightness[1], strict=True))
    capsys.readouterr()
    ivf = tmp_path / "ivf"
    shutil.copytree(REPO_ROOT / "examples" / "IVF", ivf)
    assert main(["--task", "IVF", "--input", str(ivf), "--out", str(tmp_path / "bad"), "--natural-exposure"]) == 2
    assert "applies to multi-exposure fusion (task 'MEF') only" in capsys.readouterr().err


def test_every_entry_left_out_is_reported_and_the_run_fails(model, tmp_path, capsys):
    shoot = tmp_path / "shoot"
    shutil.copytree(REPO_ROOT / "examples" / "IVF", shoot)
    (shoot / "190008_ir.jpg").mkdir()  # a folder named like an image
    (shoot / "loop_ir.png").symlink_to(shoot / "loop_vi.png")
    (shoot / "loop_vi.png").symlink_to(shoot / "loop_ir.png")  # a symbolic link loop
    shutil.copy(shoot / "TNO_07_vi.png", shoot / "lonely_vi.png")  # no partner
    (shoot / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["--task", "IVF", "--input", str(shoot), "--out", str(out), "--model", str(model),
                 "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 fused, 0 already done, 0 failed, 5 entries not fusable" in captured.out
    assert sorted(path.name for path in out.iterdir()) == ["RoadScene_FLIR_08021.png", "TNO_07.png"]
    for entry, reason in (("190008_ir.jpg", "a folder named like an image file"),
                          ("loop_ir.png", "a symbolic link loop"), ("loop_vi.png", "a symbolic link loop"),
                          ("lonely_vi.png", "no partner lonely_ir.*"), ("notes.txt", "not an image file")):
        assert f"not fused: {shoot / entry}: {reason}" in captured.err


def test_partners_missing_in_modality_folders_are_reported(tmp_path):
    nested = tmp_path / "nested"
    for modality in ("mri", "ct"):
        (nested / modality).mkdir(parents=True)
    for name in ("11.png", "12.png"):
        PIL.Image.new("L", (64, 64)).save(nested / "mri" / name)
    PIL.Image.new("L", (64, 64)).save(nested / "ct" / "11.png")
    plan = plan_folder(nested, get_task("MIF-CT"))
    assert [job.name for job in plan.jobs] == ["11"]
    assert plan.skipped == [(nested / "mri" / "12.png", "no partner ct/12.*")]


def test_help_shows_the_folder_layouts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for layout in ("0001_ir.png", "ir/0001.png", "beach/0.jpg", "--task MEF --input brackets/",
                   "accelerate launch --multi_gpu --num_processes 2 -m fusionfm.fuse"):
        assert layout in text


@pytest.mark.slow
def test_two_processes_fuse_the_same_files_as_one_and_resume_after_a_kill(model, tmp_path):
    pairs = tmp_path / "pairs"
    for modality in ("ir", "vi"):
        (pairs / modality).mkdir(parents=True)
    stems = sorted(path.stem for path in (DATA / "IVF" / "RoadScene" / "test" / "ir").iterdir())[:8]
    for stem in stems:
        for modality in ("ir", "vi"):
            source = next((DATA / "IVF" / "RoadScene" / "test" / modality).glob(f"{stem}.*"))
            shutil.copy(source, pairs / modality / source.name)
    arguments = ["-m", "fusionfm.fuse", "--task", "IVF", "--input", str(pairs), "--model", str(model),
                 "--no-progress", "--threads", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    run = run_one_then_two_killed_and_resumed(arguments, one, two, "*.png")
    done, result = run.done_before, run.resumed
    assert 2 <= len(done) < 8, "the run should have been killed part way"
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{8 - len(done)} fused, {len(done)} already done, 0 failed" in result.stdout
    assert result.stdout.count("fused,") == 1  # the main process reports
    assert sorted(path.name for path in two.glob("*.png")) == [f"{stem}.png" for stem in stems]
    for stem in stems:
        assert (two / f"{stem}.png").read_bytes() == (one / f"{stem}.png").read_bytes()
    assert all((two / name).stat().st_mtime_ns == mtime for name, mtime in done.items())


def test_default_threads_share_the_cpus_between_concurrent_fusions(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [default_threads(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
