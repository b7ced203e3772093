"""Stage 1 selection: normalisation, weights, and picking the truth when it is among the candidates."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA
from kornia.filters import gaussian_blur2d

from fusionfm.labels.selection import SELECTION_WEIGHTS, select, weighted_scores
from fusionfm.priors import priors_for, run_prior
from fusionfm.synthetic import SyntheticPairs


def test_weight_rows_sum_to_one():
    for family, row in SELECTION_WEIGHTS.items():
        assert sum(row.values()) == pytest.approx(1.0), family


def test_weighted_scores_by_hand():
    metrics = {"x": {"Qabf": 0.2, "MSE": 10.0}, "y": {"Qabf": 0.6, "MSE": 30.0}, "z": {"Qabf": 0.4, "MSE": 20.0}}
    scores = weighted_scores(metrics, {"Qabf": 0.75, "MSE": 0.25})
    # Qabf normalises to 0, 1, 0.5; MSE (lower is better) to 1, 0, 0.5.
    assert scores == pytest.approx({"x": 0.25, "y": 0.75, "z": 0.5})
    tied = weighted_scores({"x": {"SD": 3.0}, "y": {"SD": 3.0}}, {"SD": 1.0})
    assert tied == {"x": 0.5, "y": 0.5}


@pytest.mark.parametrize("task", ["MEF", "MFF"])
def test_the_truth_wins_against_degraded_versions_of_it(task):
    for pair in [SyntheticPairs(DATA, task, "test", limit=3)[i] for i in range(3)]:
        truth = pair.ground_truth[None]
        candidates = {
            "truth": truth,
            "blurred": gaussian_blur2d(truth, (7, 7), (2.0, 2.0)),
            "darker": truth * 0.7,
            "noisy": (truth + 0.08 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1),
        }
        # Not among them: the MEF average. Source-referenced metrics rank it above the truth (it sits
        # between the two exposures); see docs/pseudolabels.md.
        assert select(candidates, pair.image_a[None], pair.image_b[None], task).best == "truth", pair.stem


def test_on_synthetic_mff_the_selection_picks_the_truth_or_the_prior_nearest_to_it():
    pairs = SyntheticPairs(DATA, "MFF", "test", limit=6)
    for index in range(len(pairs)):
        pair = pairs[index]
        a, b, truth = pair.image_a[None], pair.image_b[None], pair.ground_truth[None]
        candidates = {prior.name: run_prior(prior.name, a, b, "MFF") for prior in priors_for("MFF")}
        nearest = min(candidates, key=lambda name: (candidates[name] - truth).abs().mean())
        candidates["truth"] = truth
        # Measured: the truth on 1 of these 6 pairs, the focus map (0.05-0.3 grey levels from the truth) on the
        # others, by score margins of 0.001-0.016; the other priors score 0.03-1 lower.
        assert select(candidates, a, b, "MFF").best in ("truth", nearest), pair.stem


def test_select_errors():
    image = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="needs at least one candidate"):
        select({}, image, image, "IVF")
    with pytest.raises(ValueError, match="Candidate 'x' is \\(4, 4\\), the sources are \\(8, 8\\)"):
        select({"x": torch.rand(1, 1, 4, 4)}, image, image, "IVF")
    with pytest.raises(ValueError, match="Unknown metrics in weights: \\['FOO'\\]"):
        select({"x": image}, image, image, "IVF", weights={"FOO": 1.0})
