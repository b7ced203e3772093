"""fusionfm.evaluation.validation: the fixed validation split and the benchmark-aligned score."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import DATA

from fusionfm.evaluation.ranking import RANKED_METRICS
from fusionfm.evaluation.validation import (
    CHOICE_LEVELS,
    NEAR_COPY_LEVELS,
    benchmark_score,
    best_prior_mean,
    distance_to_nearer_source,
    validation_keys,
    validation_pairs,
)
from fusionfm.priors import run_prior
from fusionfm.tasks import get_task
from fusionfm.training.datasets import LabelledPairs


@pytest.fixture(scope="module")
def mef_pairs():
    return validation_pairs(DATA, "MEF", resolution=128, count=6)


def test_the_split_covers_every_family_and_no_test_pair():
    keys = validation_keys()
    assert len(keys) > 100
    for family in ("IVF", "MIF", "MEF", "MFF"):
        assert validation_keys(family)
    test_stems = set()
    for line in (DATA / "manifest.csv").read_text().splitlines()[1:]:
        task, dataset, split, stem = line.split(",")[:4]
        if split == "test":
            test_stems.add((dataset, stem))
    assert not keys & test_stems


def test_a_prior_scores_its_share_of_the_field(mef_pairs):
    pair = mef_pairs[0]
    assert set(pair.prior_metrics) == {"average", "laplacian", "wavelet", "gff", "exposure"}
    fused = run_prior("laplacian", pair.image_a, pair.image_b, pair.task)
    table = pair.prior_metrics
    expected = sum(
        sum(1.0 if table["laplacian"][m] > v[m] else 0.5 if table["laplacian"][m] == v[m] else 0.0
            for v in table.values()) / len(table)
        for m in RANKED_METRICS) / len(RANKED_METRICS)
    assert benchmark_score(fused, pair) == pytest.approx(expected)


def test_the_best_prior_mean_is_the_highest_mean_over_the_pairs(mef_pairs):
    """On real MEF validation pairs: the named prior's mean is the largest of the priors' means, computed by hand."""
    for metric in ("Qabf", "SF", "SSIM"):
        means = {name: sum(p.prior_metrics[name][metric] for p in mef_pairs) / len(mef_pairs)
                 for name in mef_pairs[0].prior_metrics}
        name, value = best_prior_mean(mef_pairs, metric)
        assert value == pytest.approx(means[name]) and value == pytest.approx(max(means.values()))


def test_the_score_ranks_band_wise_fusion_above_the_plain_average(mef_pairs):
    laplacian = sum(benchmark_score(run_prior("laplacian", p.image_a, p.image_b, p.task), p) for p in mef_pairs)
    average = sum(benchmark_score((p.image_a + p.image_b) / 2, p) for p in mef_pairs)
    assert laplacian > average + 0.1 * len(mef_pairs)


def test_a_source_is_a_near_copy_and_real_fusions_are_not(mef_pairs):
    """Real exposure pairs: either source is 0 grey levels from itself; the plain average is half the sources'
    difference away (more than CHOICE_LEVELS / 2 where they differ by more than CHOICE_LEVELS); the Laplacian prior
    is a fusion, not a copy; identical sources leave no choice to judge."""
    for pair in mef_pairs:
        assert distance_to_nearer_source(pair.image_a, pair) == 0 == distance_to_nearer_source(pair.image_b, pair)
        assert distance_to_nearer_source((pair.image_a + pair.image_b) / 2, pair) > CHOICE_LEVELS / 2 - 0.5
        fused = run_prior("laplacian", pair.image_a, pair.image_b, pair.task)
        assert distance_to_nearer_source(fused, pair) > NEAR_COPY_LEVELS
        slightly_off = (pair.image_a + 1.5 / 255).clamp(0, 1)  # a copy of a, 1.5 grey levels brighter
        assert distance_to_nearer_source(slightly_off, pair) < NEAR_COPY_LEVELS
    same = dataclasses.replace(mef_pairs[0], image_b=mef_pairs[0].image_a)
    assert distance_to_nearer_source(same.image_a, same) == float("inf")


def test_training_pairs_leave_the_validation_pairs_out(tmp_path):
    from fusionfm.pseudolabel import main as build_labels

    out = tmp_path / "labels"
    assert build_labels(["--data", str(DATA), "--task", "MIF-PET", "--split", "train", "--limit", "5", "--no-refine",
                         "--no-progress", "--out", str(out)]) == 0
    everything = LabelledPairs(out, DATA, "MIF")
    held_out = validation_keys("MIF")
    kept = LabelledPairs(out, DATA, "MIF", exclude=held_out)
    assert len(everything) == 5 and len(kept) == 4  # the 4th PET training pair is a validation pair
    assert not {(p.dataset, p.stem) for p in kept.pairs} & held_out
    assert kept[0]["task"] == "MIF-PET" and kept[0]["task_id"] == get_task("MIF").class_id  # variant and class
