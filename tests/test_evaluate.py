"""fusionfm.evaluate: the quality score, ranking, and the CLI on a small real data set folder."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import (
    DATA,
    make_pipeline,
    run_one_then_two_killed_and_resumed,
)

from fusionfm.evaluate import main
from fusionfm.evaluation.ranking import RANKED_METRICS, _ranks, rank_methods
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.metrics.fusion import spatial_frequency, to_gray_255

STEMS = ("carLight", "carShadow")


@pytest.fixture()
def mini_dataset(tmp_path):
    """Two VIFB pairs and one method's outputs (SeAFusion), laid out as shared/data (no manifest)."""
    root = tmp_path / "data"
    vifb = DATA / "IVF" / "VIFB"
    for stem in STEMS:
        for folder in ("test/ir", "test/vi", "priors/SeAFusion"):
            source = next((vifb / folder).glob(f"{stem}.*"))
            (root / "IVF" / "Mini" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / "IVF" / "Mini" / folder / source.name)
    return root


def _read(path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_ranks_a_model_among_the_priors(mini_dataset, tmp_path, capsys):
    model = tmp_path / "model"
    make_pipeline().save_pretrained(model)
    out = tmp_path / "out"
    assert main(["--model", str(model), "--data", str(mini_dataset), "--task", "IVF", "--dataset", "Mini",
                 "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.stem for p in (out / "fused").glob("*.png")) == sorted(STEMS)
    per_pair = _read(out / "per_pair.csv")
    methods = {"FusionFM", "SeAFusion", "builtin:average", "builtin:max", "builtin:laplacian", "builtin:wavelet",
               "builtin:gff", "builtin:two_scale_saliency"}
    assert {row["method"] for row in per_pair} == methods
    assert len(per_pair) == len(methods) * len(STEMS)
    assert all(float(row["seconds"]) > 0 for row in per_pair if row["method"] == "FusionFM")
    assert all(row["seconds"] == "" for row in per_pair if row["method"] != "FusionFM")
    ranking = _read(out / "ranking.csv")
    assert list(ranking[0]) == ["position", "method", "pairs", *RANKED_METRICS,
                                *(f"rank_{m}" for m in RANKED_METRICS), "mean_rank"]
    assert [int(row["position"]) for row in ranking] == list(range(1, len(methods) + 1))
    assert [float(row["mean_rank"]) for row in ranking] == sorted(float(row["mean_rank"]) for row in ranking)
    table = (out / "ranking.md").read_text()
    assert "**FusionFM**" in table and "| mean rank |" in table and "2 pairs" in table
    assert "Mini: FusionFM ranks" in capsys.readouterr().out


def test_cli_evaluates_a_folder_of_fused_images(mini_dataset, tmp_path):
    out = tmp_path / "out"
    fused = mini_dataset / "IVF" / "Mini" / "priors" / "SeAFusion"
    assert main(["--fused", str(fused), "--data", str(mini_dataset), "--task", "IVF", "--out", str(out),
                 "--no-builtin-priors", "--no-progress"]) == 0
    ranking = _read(out / "ranking.csv")
    assert [row["method"] for row in ranking] == ["SeAFusion"]  # the folder is the only method
    assert not (out / "fused").exists()


def test_cli_errors(mini_dataset, tmp_path, capsys):
    assert main(["--fused", str(tmp_path / "nowhere"), "--data", str(mini_dataset), "--task", "IVF",
                 "--out", str(tmp_path / "out")]) == 2
    assert "No folder of fused images" in capsys.readouterr().err
    assert main(["--fused", str(tmp_path), "--data", str(mini_dataset), "--task", "MEF",
                 "--out", str(tmp_path / "out")]) == 2
    assert "MEF" in capsys.readouterr().err


def test_a_method_missing_some_pairs_is_listed_not_ranked(mini_dataset, tmp_path):
    next((mini_dataset / "IVF" / "Mini" / "priors" / "SeAFusion").glob(f"{STEMS[0]}.*")).unlink()
    model = tmp_path / "model"
    make_pipeline().save_pretrained(model)
    out = tmp_path / "out"
    assert main(["--model", str(model), "--data", str(mini_dataset), "--task", "IVF", "--dataset", "Mini",
                 "--out", str(out), "--no-progress", "--no-builtin-priors"]) == 0
    assert [(row["method"], row["pairs"]) for row in _read(out / "ranking.csv")] == [("FusionFM", "2")]
    assert "Not ranked (outputs for only some of these pairs): SeAFusion (1 of 2)." in (out / "ranking.md").read_text()


def test_ranks_share_ties():
    assert _ranks([3.0, 1.0, 3.0, 2.0]) == [1.5, 4.0, 1.5, 3.0]


def test_rank_methods_uses_only_the_pairs_every_method_has():
    one = dict.fromkeys(RANKED_METRICS, 1.0)
    two = dict.fromkeys(RANKED_METRICS, 2.0)
    rows = rank_methods({"good": {"x": two, "y": two}, "poor": {"x": one}})
    assert [(row["method"], row["pairs"], row["mean_rank"]) for row in rows] == [("good", 1, 1.0), ("poor", 1, 2.0)]


def _without_seconds(path) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in _read(path)]


@pytest.mark.slow
def test_two_processes_write_the_same_tables_as_one_and_resume_after_a_kill(tmp_path):
    root = tmp_path / "data"
    vifb = DATA / "IVF" / "VIFB"
    stems = sorted(p.stem for p in (vifb / "test" / "ir").iterdir())[:6]
    for stem in stems:
        for folder in ("test/ir", "test/vi"):
            source = next((vifb / folder).glob(f"{stem}.*"))
            (root / "IVF" / "Mini" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / "IVF" / "Mini" / folder / source.name)
    model = tmp_path / "model"
    make_pipeline().save_pretrained(model)
    arguments = ["-m", "fusionfm.evaluate", "--model", str(model), "--data", str(root), "--task", "IVF",
                 "--no-progress", "--no-builtin-priors"]
    one, two = tmp_path / "one", tmp_path / "two"
    run = run_one_then_two_killed_and_resumed(arguments, one, two, ".pairs/*.json")
    done, result = run.done_before, run.resumed
    assert 2 <= len(done) < 6, "the run should have been killed part way"
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Mini: FusionFM ranks 1 of 1" in result.stdout and result.stdout.count("ranks") == 1  # main only
    assert _without_seconds(two / "per_pair.csv") == _without_seconds(one / "per_pair.csv")
    assert (two / "ranking.csv").read_bytes() == (one / "ranking.csv").read_bytes()
    assert sorted(p.name for p in (two / "fused").iterdir()) == sorted(f"{stem}.png" for stem in stems)
    assert not (two / ".pairs").exists()


def test_cli_passes_the_settings_to_the_model_and_refuses_ones_it_cannot_take(mini_dataset, tmp_path, capsys):
    sharpness = {}
    for setting, extra in (("sharpened", ["--detail-gain", "1.3"]), ("faithful", ["--detail-gain", "1"])):
        out = tmp_path / setting
        assert main(["--data", str(mini_dataset), "--task", "IVF", "--dataset", "Mini", "--out", str(out),
                     "--no-progress", "--no-builtin-priors", *extra]) == 0  # the bundled model
        fused = [FusionImageProcessor().load(path)[None] for path in sorted((out / "fused").glob("*.png"))]
        sharpness[setting] = [float(spatial_frequency(to_gray_255(image))) for image in fused]
    # Gains above 1 sharpen every detail level (SF +27 % at 1.3 on the bundled example pairs); 1 keeps the sources'.
    assert all(sharp > faithful * 1.1 for sharp, faithful in zip(*sharpness.values(), strict=True))
    capsys.readouterr()
    for extra, message in ((["--detail-gain", "3"], "detail_gain must be None (the model's own) or a number from"),
                           (["--natural-exposure"], "applies to multi-exposure fusion (task 'MEF') only")):
        assert main(["--data", str(mini_dataset), "--task", "IVF", "--out", str(tmp_path / "bad"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
