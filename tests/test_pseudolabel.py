"""The pseudo-label CLI: outputs, determinism, resume after a kill, and clear errors."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import DATA, REPO_ROOT, accelerate_launcher, kill_process_tree
from kornia.filters import gaussian_blur2d

from fusionfm import FusionImageProcessor
from fusionfm.color import luminance
from fusionfm.datasets import find_pairs
from fusionfm.labels.builder import CSV_COLUMNS, score_refinement
from fusionfm.labels.refiner import RefinerConfig, refine_image, train_decomposer
from fusionfm.labels.selection import select
from fusionfm.priors import priors_for, run_prior
from fusionfm.pseudolabel import main
from fusionfm.tasks import get_task

SYNTHETIC_MFF = ["--data", str(DATA), "--task", "MFF", "--synthetic", "--split", "test", "--no-progress",
                 "--refiner-steps", "20"]


def _rows(out: Path) -> list[dict]:
    with (out / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _label_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "synthetic-BSDS500").glob("*.png"))}


@pytest.mark.slow
def test_real_pairs_with_external_priors(tmp_path):
    out = tmp_path / "labels"
    assert main(["--data", str(DATA), "--task", "IVF", "--split", "train", "--datasets", "MSRS", "--out", str(out),
                 "--no-progress", "--refiner-steps", "20", "--limit", "2"]) == 0
    assert (out / "refiner" / "IVF.safetensors").is_file()
    rows = _rows(out)
    stems = {p.stem for p in find_pairs(DATA, "IVF", "train", ["MSRS"])[:2]}
    assert {row["stem"] for row in rows} == stems
    selected = [row for row in rows if row["selected"] == "1"]
    assert len(selected) == len(stems)
    assert {row["origin"] for row in rows} == {"builtin", "external"}  # PIAFusion outputs ship for MSRS train
    for row in selected:
        label = PIL.Image.open(out / "MSRS" / f"{row['stem']}.png")
        assert label.size == (640, 480) and label.mode == "RGB"
        assert float(row["score"]) == max(float(r["score"]) for r in rows if r["stem"] == row["stem"])
        assert row["refined"] in ("0", "1")
        if row["refined"] == "1":
            assert float(row["score_after"]) >= float(row["score_before"])


@pytest.mark.slow
def test_synthetic_labels_are_deterministic_and_resume_after_a_kill(tmp_path):
    clean = tmp_path / "clean"
    assert main([*SYNTHETIC_MFF, "--limit", "4", "--out", str(clean)]) == 0
    reference = _label_bytes(clean)
    assert len(reference) == 4
    assert (clean / "synthetic-BSDS500" / "truth").is_dir()

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "fusionfm.pseudolabel", *SYNTHETIC_MFF, "--limit", "4",
                                "--out", str(killed)], env=env)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((killed / "synthetic-BSDS500").glob("*.png"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in (killed / "synthetic-BSDS500").glob("*.png")}
    assert 2 <= len(done_before) < 4, "the run should have been killed part way"
    # A partial CSV line, as a kill during a write would leave.
    with (killed / "labels.csv").open("a") as handle:
        handle.write("MFF,synthetic-BSDS500,test,999999,average")

    assert main([*SYNTHETIC_MFF, "--limit", "4", "--out", str(killed)]) == 0
    rows = _rows(killed)
    assert CSV_COLUMNS == list(rows[0])
    assert sorted(row["stem"] for row in rows if row["selected"] == "1") == sorted(p[:-4] for p in reference)
    assert len(rows) == len(_rows(clean))
    assert _label_bytes(killed) == reference  # same labels as the uninterrupted run
    # Labels finished before the kill were not rewritten; only a label whose CSV rows the kill cut off
    # (PNG written, rows not yet appended) may have been redone.
    untouched = [name for name, mtime in done_before.items()
                 if (killed / "synthetic-BSDS500" / name).stat().st_mtime_ns == mtime]
    assert len(untouched) >= len(done_before) - 1


@pytest.mark.slow
def test_two_processes_write_the_same_labels_and_rows_as_one_and_resume_after_a_kill(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    arguments = [*SYNTHETIC_MFF, "--limit", "6"]
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "fusionfm.pseudolabel", *arguments, "--out", str(one)], env=env,
                   check=True, capture_output=True, timeout=600)
    two = tmp_path / "two"
    command = [*accelerate_launcher(2), "-m", "fusionfm.pseudolabel", *arguments, "--out", str(two)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((two / "synthetic-BSDS500").glob("*.png"))) < 2:
        time.sleep(0.02)
    kill_process_tree(process)
    assert 2 <= len(list((two / "synthetic-BSDS500").glob("*.png"))) < 6, "the run should have been killed part way"
    assert list(two.glob(".labels-*.csv"))  # each process had its own rows file
    result = subprocess.run([*accelerate_launcher(2), "-m", "fusionfm.pseudolabel", *arguments, "--out", str(two)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (two / "labels.csv").read_bytes() == (one / "labels.csv").read_bytes()
    assert not list(two.glob(".labels-*.csv"))
    for name, data in _label_bytes(one).items():
        ours = torch.from_numpy(np.asarray(PIL.Image.open(two / "synthetic-BSDS500" / name)).copy())
        assert torch.equal(ours, torch.from_numpy(np.asarray(PIL.Image.open(io.BytesIO(data))).copy())), name


def test_errors_are_clear(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--task", "IVF", "--out", str(tmp_path / "o")]) == 2
    assert "No data folder at" in capsys.readouterr().err

    assert main(["--data", str(DATA), "--task", "XYZ", "--out", str(tmp_path / "o")]) == 2
    assert "Unknown task 'XYZ'" in capsys.readouterr().err

    # A folder layout without manifest, with an image that has no partner and one that is corrupt.
    root = tmp_path / "data"
    for modality in ("ir", "vi"):
        (root / "IVF/Mine/train" / modality).mkdir(parents=True)
        shutil.copy(DATA / f"IVF/RoadScene/test/{modality}/FLIR_06995.jpg", root / f"IVF/Mine/train/{modality}/p1.jpg")
    shutil.copy(DATA / "IVF/RoadScene/test/ir/FLIR_06974.jpg", root / "IVF/Mine/train/ir/lonely.jpg")
    assert main(["--data", str(root), "--task", "IVF", "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "stems without a partner in ir/ or vi/: lonely" in capsys.readouterr().err

    (root / "IVF/Mine/train/ir/lonely.jpg").unlink()
    (root / "IVF/Mine/train/vi/p1.jpg").write_bytes(b"\xff\xd8\xff truncated jpeg")
    assert main(["--data", str(root), "--task", "IVF", "--out", str(tmp_path / "o3"), "--no-progress"]) == 2
    assert "Could not read" in (err := capsys.readouterr().err) and "p1.jpg" in err


@pytest.mark.slow
def test_the_builder_keeps_a_refined_label_only_when_its_score_does_not_drop():
    processor = FusionImageProcessor()
    a, b = (processor.load(DATA / f"IVF/RoadScene/test/{modality}/FLIR_06995.jpg")[None] for modality in ("ir", "vi"))
    task = get_task("IVF")
    candidates = {prior.name: run_prior(prior.name, a, b, task) for prior in priors_for(task)}
    label = 0.5 * gaussian_blur2d(luminance(a), (9, 9), (3.0, 3.0)) + 0.5 * luminance(b)  # a's detail gone
    selection = select({**candidates, "blurred": label}, a, b, task)
    selection.best = "blurred"  # score the damaged label as if stage 1 had picked it
    config = RefinerConfig(train_steps=60)
    net = train_decomposer([(luminance(a), luminance(b))], config)
    before, after = score_refinement(label, refine_image(label, a, b, net, config), a, b, task, selection)
    assert after > before
    wild = RefinerConfig(strength=25.0, threshold=0.0, noise_factor=0.0)
    before, after = score_refinement(label, refine_image(label, a, b, net, wild), a, b, task, selection)
    assert after < before
    assert torch.isfinite(torch.tensor([before, after])).all()


@pytest.mark.slow
def test_regions_join_the_candidates(tmp_path):
    out = tmp_path / "labels"
    assert main([*SYNTHETIC_MFF, "--limit", "2", "--no-refine", "--regions", "--out", str(out)]) == 0
    rows = _rows(out)
    regions = [row for row in rows if row["candidate"] == "regions"]
    assert len(regions) == 2 and {row["origin"] for row in regions} == {"regions"}
    assert len(rows) == 2 * 6  # five built-in MFF priors and their merge, per pair
