"""fusionfm.pyramid: exact reconstruction and band-wise blending; the U-Net's pyramid head built on it."""

from __future__ import annotations

import json
import math

import PIL.Image
import pytest
import torch
from conftest import DATA, make_pipeline

from fusionfm import (
    UNET_PRESETS,
    FlowMatchFusionScheduler,
    FusionFMPipeline,
    FusionImageProcessor,
    FusionUNet,
    build_unet,
)
from fusionfm.color import luminance
from fusionfm.metrics.fusion import fusion_metrics, to_gray_255
from fusionfm.priors import laplacian_pyramid_fusion
from fusionfm.pyramid import (
    CONSISTENT_SIGMA,
    activity_fusion,
    activity_logit,
    blend_pyramids,
    collapse,
    consistent_detail_logit,
    laplacian_pyramid,
    mean_levels,
    pyramid_levels,
    salience_logit,
)
from fusionfm.stacks import blend_stack
from fusionfm.tasks import get_task
from fusionfm.unet import start_prior


@pytest.fixture(scope="module")
def sources(real_pair):
    processor = FusionImageProcessor()
    ir, vi = real_pair("IVF")
    a, b = (luminance(processor.to_tensor_list(image)[0][None]) for image in (ir, vi))
    return a[..., :96, :120], b[..., :96, :120]


def test_collapse_inverts_the_laplacian_pyramid_at_odd_sizes(sources):
    a = sources[0][..., :77, :101]
    torch.testing.assert_close(collapse(laplacian_pyramid(a, 4)), a, atol=1e-5, rtol=0)
    assert pyramid_levels(77, 101) == 4 and pyramid_levels(4, 4) == 1


def test_saturated_weights_and_unit_gains_reproduce_each_source(sources):
    a, b = sources
    saturated, unit_gains = torch.full((1, 4, *a.shape[-2:]), 50.0), torch.ones(1, 3, *a.shape[-2:])
    torch.testing.assert_close(blend_pyramids(a, b, saturated, unit_gains), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(blend_pyramids(a, b, -saturated, unit_gains), b, atol=1e-5, rtol=0)


def test_band_wise_weights_take_each_band_from_its_source(sources):
    a, b = sources
    weights = torch.full((1, 3, *a.shape[-2:]), -50.0)
    weights[:, 0] = 50.0  # the finest band from a, the rest from b
    fused = blend_pyramids(a, b, weights, torch.ones(1, 2, *a.shape[-2:]))
    bands_a, bands_b = laplacian_pyramid(a, 3), laplacian_pyramid(b, 3)
    torch.testing.assert_close(fused, collapse([bands_a[0], bands_b[1], bands_b[2]]), atol=1e-6, rtol=0)
    doubled = blend_pyramids(a, b, weights, torch.full((1, 2, *a.shape[-2:]), 2.0))
    torch.testing.assert_close(doubled, collapse([2 * bands_a[0], 2 * bands_b[1], bands_b[2]]), atol=1e-6, rtol=0)
    assert (doubled - fused).abs().mean() > 0.005  # the gains really raise the detail
    with pytest.raises(ValueError, match="3 weight maps need 2 gain maps"):
        blend_pyramids(a, b, weights, torch.ones(1, 3, *a.shape[-2:]))


def test_the_pyramid_head_maps_its_outputs_to_weights_and_bounded_gains(sources):
    a, b = (x[..., :96, :112] for x in sources)
    torch.manual_seed(0)
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, max_gain=2.0)
    assert unet.unet.conv_out.out_channels == 5  # 3 weights + 2 gains
    logits = torch.tensor([10.0, -10.0, -10.0, 0.5, 0.0])  # fine band from a, the rest from b; finer gain > 1
    torch.nn.init.zeros_(unet.unet.conv_out.weight)
    with torch.no_grad():
        unet.unet.conv_out.bias.copy_(logits)
    x0 = (a + b) / 2
    velocity = unet(x0, a, b, torch.zeros(1), torch.zeros(1, dtype=torch.long))
    weight_logits = logits[:3].view(1, 3, 1, 1).expand(1, 3, 96, 112)
    gains = (2.0 ** torch.tanh(logits[3:])).view(1, 2, 1, 1).expand(1, 2, 96, 112)
    expected = blend_pyramids(a, b, weight_logits, gains)
    torch.testing.assert_close(x0 + velocity, expected, atol=1e-5, rtol=0)  # one Euler step from t = 0 lands on it


def test_smooth_weights_leave_no_checkerboard(sources):
    """With smooth weights (weight head), one weight per 2x2 patch is upsampled bilinearly: random output layers
    cannot put a 2-pixel pattern into the weights, and so none into a fusion of two flat sources."""
    from fusionfm.evaluation.artifacts import nyquist_energy

    torch.manual_seed(0)
    a, b = torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)
    energies = {}
    for smooth in (False, True):
        unet = build_unet("weight", smooth_weights=smooth)
        torch.nn.init.normal_(unet.unet.conv_out.weight, std=1.0)  # a strongly varying weight map
        velocity = unet((a + b) / 2, a, b, torch.zeros(1), torch.zeros(1, dtype=torch.long))
        energies[smooth] = nyquist_energy(((a + b) / 2 + velocity) * 255)
    assert energies[True] < 0.05 * energies[False]


def test_activity_logit_by_hand():
    a, b = torch.tensor([[0.2, -0.1]]), torch.tensor([[0.1, 0.3]])
    expected = torch.tensor([[(0.2 - 0.1) / (0.3 + 1e-3), (0.1 - 0.3) / (0.4 + 1e-3)]])
    torch.testing.assert_close(activity_logit(a, b, base=False), expected)
    base_a, base_b = torch.tensor([[0.6, 0.0]]), torch.tensor([[0.2, 0.0]])
    torch.testing.assert_close(activity_logit(base_a, base_b, base=True), torch.tensor([[0.4 / (0.8 + 1e-3), 0.0]]))


def test_salience_logit_by_hand():
    """On a flat 5x5 band the Gaussian smoothing leaves each constant magnitude as it is."""
    base_a, base_b = torch.full((1, 1, 5, 5), 0.9), torch.full((1, 1, 5, 5), 0.3)
    means = torch.tensor([[0.5, 0.2]])  # a departs 0.4 from its mean, b 0.1
    expected = torch.full((1, 1, 5, 5), (0.4 - 0.1) / (0.5 + 1e-3))
    torch.testing.assert_close(salience_logit(base_a, base_b, means), expected)
    # Without means each band's own: a flat band departs from nothing, so neither source is salient.
    torch.testing.assert_close(salience_logit(base_a, base_b), torch.zeros(1, 1, 5, 5))


def test_a_salient_base_keeps_what_stands_out_in_either_source():
    """An infrared image with a warm target on a mid-grey background, a visible one with a headlight and a black
    car on a grey road. An averaged base (the previous IVF prior) greys the headlight; a brighter-source base
    turns the black car into the infrared's grey; the salient base keeps the target, the headlight and the car."""
    a = torch.full((1, 1, 128, 128), 0.45)
    a[..., 20:52, 20:52] = 0.95  # the warm target
    b = torch.full((1, 1, 128, 128), 0.5)
    b[..., 76:108, 76:108] = 1.0  # the headlight
    b[..., 76:108, 12:44] = 0.0  # the black car
    detail = [16.0] * 2  # 3 levels: the base (32x32) holds most of each 32-pixel object
    averaged = activity_fusion(a, b, torch.tensor([*detail, 0.0]))
    brighter = activity_fusion(a, b, torch.tensor([*detail, 4.0]))
    salient = activity_fusion(a, b, torch.tensor([*detail, 4.0]), salient_base=True)

    def mean_in(image: torch.Tensor, top: int, left: int) -> float:
        return image[..., top + 8 : top + 24, left + 8 : left + 24].mean().item()

    assert mean_in(salient, 20, 20) > 0.9 and mean_in(averaged, 20, 20) < 0.8  # target
    assert mean_in(salient, 76, 76) > 0.95 and mean_in(averaged, 76, 76) < 0.8  # headlight
    assert mean_in(salient, 76, 12) < 0.05 and mean_in(brighter, 76, 12) > 0.3  # black car


def test_a_salient_base_measured_from_given_means_is_the_same_in_every_tile(sources):
    """Tiles fused with the whole image's means see the same salience as the whole image does (up to each
    tile's own pyramid); with each tile's own means they would not."""
    a, b = (x[..., :96, :112] for x in sources)
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0, 8.0, 4.0]] * 4,
                      base_activity=["salient", "brighter", "brighter", "brighter"])
    means = mean_levels(a, b)
    task, zeros = torch.tensor([0]), torch.zeros(1)
    x0 = (a + b) / 2
    whole = x0 + unet(x0, a, b, zeros, task, source_means=means)
    tile = (slice(None), slice(None), slice(0, 48), slice(0, 56))
    given = x0[tile] + unet(x0[tile], a[tile], b[tile], zeros, task, source_means=means)
    own = x0[tile] + unet(x0[tile], a[tile], b[tile], zeros, task)
    inner = (slice(None), slice(None), slice(8, 40), slice(8, 48))  # away from the tile's own borders
    assert (given[inner] - whole[tile][inner]).abs().mean() < (own[inner] - whole[tile][inner]).abs().mean()
    # The MIF item (brighter base) does not depend on the means.
    mif = torch.tensor([1])
    torch.testing.assert_close(unet(x0, a, b, zeros, mif, source_means=means), unet(x0, a, b, zeros, mif))


def test_consistent_detail_logit_by_hand():
    """On bands of constant magnitude the smoothing leaves each magnitude as it is; signs do not matter."""
    finest_a = torch.tensor([[[[0.3, -0.3, 0.3], [-0.3, 0.3, -0.3]]]])
    finest_b = torch.full((1, 1, 2, 3), 0.1)
    expected = torch.full((1, 1, 2, 3), (0.3 - 0.1) / (0.4 + 1e-3))
    torch.testing.assert_close(consistent_detail_logit(finest_a, finest_b), expected)
    torch.testing.assert_close(consistent_detail_logit(finest_a, finest_b, epsilon=0.03),
                               torch.full((1, 1, 2, 3), (0.3 - 0.1) / (0.4 + 0.03)))


def test_a_larger_consistency_epsilon_evens_the_choice_only_where_both_bands_are_weak():
    """Weak bands (0.003 against 0.001, noise on flat ground): 0.4 with the old epsilon 0.001, 0.059 with 0.03;
    a strong edge (0.3 against 0.1) stays at 0.47 either way."""
    weak_a, weak_b = torch.full((1, 1, 4, 4), 0.003), torch.full((1, 1, 4, 4), 0.001)
    assert consistent_detail_logit(weak_a, weak_b).mean().item() == pytest.approx(0.002 / 0.005, abs=1e-4)
    assert consistent_detail_logit(weak_a, weak_b, epsilon=0.03).mean().item() == pytest.approx(0.002 / 0.034,
                                                                                                abs=1e-4)
    strong_a, strong_b = weak_a * 100, weak_b * 100
    assert consistent_detail_logit(strong_a, strong_b, epsilon=0.03).mean().item() == pytest.approx(0.2 / 0.43,
                                                                                                    abs=1e-4)


def test_a_consistent_detail_choice_keeps_more_of_the_sources_edges_on_a_real_mri_ct_pair(real_pair):
    """Qabf (edge strength and orientation kept from the sources) of the prior alone, MRI-CT example: with half of
    every detail level's choice from one consistent map it rises (0.613 -> 0.650 measured); weight 0 is the
    per-band choice exactly."""
    processor = FusionImageProcessor()
    mri, ct = (luminance(processor.to_tensor_list(image)[0][None]) for image in real_pair("MIF-CT"))
    scales, gains = torch.full((5,), 16.0), torch.full((4,), 1.02)
    per_band = activity_fusion(mri, ct, scales, gains)
    torch.testing.assert_close(activity_fusion(mri, ct, scales, gains, detail_consistency=0.0), per_band)
    consistent = activity_fusion(mri, ct, scales, gains, detail_consistency=0.5)
    gray = to_gray_255(mri), to_gray_255(ct)
    qabf = [float(fusion_metrics(to_gray_255(image), *gray)["Qabf"]) for image in (per_band, consistent)]
    assert qabf[1] > qabf[0] + 0.02


def test_start_prior_fuses_as_the_untrained_default_head_of_every_task(sources):
    """The scripts that build labels and tables from a config's start (:func:`fusionfm.unet.start_prior`) fuse
    exactly as the untrained default preset does: its base rule, detail consistency, strengths and gains."""
    a, b = (x[..., :96, :96] for x in sources)
    unet = build_unet("default").eval()
    x0 = (a + b) / 2
    for task_id in range(4):
        with torch.no_grad():
            head = x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([task_id]), source_means=mean_levels(a, b))
        prior = activity_fusion(a, b, **start_prior(UNET_PRESETS["default"], task_id))
        torch.testing.assert_close(head.clamp(0, 1), prior, atol=1e-5, rtol=0)


def test_a_sharper_base_keeps_the_in_focus_source_without_the_others_blurred_ghost(real_pair):
    """A real multi-focus pair (MFIFB lytro_01): where one source's detail is clearly the stronger (consistent map
    beyond +-0.2, a fifth of the image each), the default MFF prior with its sharper-source base stays closer to
    that source than the same prior with an averaged base (the previous MFF rule), whose coarse bands mix in the
    other source's blurred copy of the object. Measured: 1.40 vs 2.41 grey levels where a is sharp, 0.32 vs 0.43
    where b is."""
    processor = FusionImageProcessor()
    a, b = (luminance(processor.to_tensor_list(image)[0][None]) for image in real_pair("MFF"))
    start = start_prior(UNET_PRESETS["default"], get_task("MFF").class_id)
    assert start["sharper_base"] and start["scales"][-1] > 0
    averaged_base = dict(start, sharper_base=False, scales=torch.cat([start["scales"][:-1], torch.zeros(1)]))
    sharper, averaged = activity_fusion(a, b, **start), activity_fusion(a, b, **averaged_base)
    finest = laplacian_pyramid(torch.cat([a, b], dim=1), 5)[0]
    choice = consistent_detail_logit(finest[:, :1], finest[:, 1:], start["consistency_sigma"],
                                     start["consistency_epsilon"])
    for region, source, share in ((choice > 0.2, a, 0.7), (choice < -0.2, b, 0.9)):
        assert region.float().mean() > 0.15
        assert (sharper - source).abs()[region].mean() < share * (averaged - source).abs()[region].mean()


def test_a_stack_keeps_an_averaged_base_for_a_sharper_base_task():
    """Stacks compare frames by brightness only: a task whose pair base follows the sharper source fuses a stack
    as if its base strength were 0 (the LytroTriple triple-1 focus stack, downscaled)."""
    frames = [PIL.Image.open(path).convert("RGB").reduce(4)
              for path in sorted((DATA / "MFF" / "LytroTriple" / "triple-1").glob("*.jpg"))]
    fused = {}
    for rule, base in (("sharper", 32.0), ("brighter", 0.0)):
        pipe = make_pipeline()
        scales = [[16.0] * 4 + [base]] * 4
        pipe.unet = build_unet("default", block_out_channels=(8, 16, 16, 16), norm_num_groups=4,
                               activity_scales=scales, base_activity=["brighter"] * 3 + [rule]).eval()
        fused[rule] = pipe(frames, task="MFF", output_type="pt", compute_dtype="fp32").images
    torch.testing.assert_close(fused["sharper"], fused["brighter"])


def test_base_and_detail_rules_are_kept_on_save_and_wrong_ones_are_refused(tmp_path):
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                      base_activity=["salient", "brighter", "brighter", "brighter"])
    unet.save_pretrained(tmp_path)
    assert FusionUNet.from_pretrained(tmp_path).salient_base.tolist() == [True, False, False, False]
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                      base_activity=["salient", "brighter", "brighter", "sharper"])
    unet.save_pretrained(tmp_path / "sharper")
    assert FusionUNet.from_pretrained(tmp_path / "sharper").sharper_base.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="one of brighter, salient, sharper per task"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                   base_activity=["loudest"] * 4)
    with pytest.raises(ValueError, match="needs activity_scales"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, base_activity=["salient"] * 4)
    with pytest.raises(ValueError, match="one weight in \\[0, 1\\] per task"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                   detail_consistency=[0.0, 1.5, 0.0, 0.0])
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                      detail_consistency=[0.0, 0.5, 0.0, 0.0])
    unet.save_pretrained(tmp_path / "consistent")
    assert FusionUNet.from_pretrained(tmp_path / "consistent").consistency_weight.tolist() == [0.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="consistency_epsilon must be positive"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4,
                   consistency_epsilon=0.0)


def test_models_saved_before_the_consistency_epsilon_and_sigma_keep_theirs(tmp_path):
    """The default preset's per-task epsilons and its sigma (5) are saved; a config written before the fields
    existed loads with the values those models were trained with (epsilon 0.001, sigma 2), so their fusions do not
    change."""
    build_unet("default").save_pretrained(tmp_path)
    loaded = FusionUNet.from_pretrained(tmp_path)
    assert loaded.config.consistency_epsilon == [0.1, 0.1, 0.03, 0.03]
    assert loaded.consistency_epsilons.tolist() == pytest.approx([0.1, 0.1, 0.03, 0.03])
    assert loaded.config.consistency_sigma == 5.0
    assert start_prior(loaded.config, 2)["consistency_epsilon"] == 0.03
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    del config["consistency_epsilon"], config["consistency_sigma"]
    config_path.write_text(json.dumps(config))
    loaded = FusionUNet.from_pretrained(tmp_path)
    assert loaded.consistency_epsilons.tolist() == pytest.approx([1e-3] * 4)
    assert loaded.config.consistency_sigma == CONSISTENT_SIGMA == 2.0
    assert start_prior(loaded.config, 0)["consistency_sigma"] == 2.0


def test_per_task_consistency_epsilons_fuse_a_mixed_batch_as_each_task_alone(sources):
    """An IVF item (epsilon 0.1) and an MFF item (0.03) in one batch fuse as each does alone, and a wrong number of
    epsilons or a sigma <= 0 is refused."""
    a, b = (x[..., :64, :64] for x in sources)
    unet = build_unet("default").eval()
    pair_a, pair_b = torch.cat([a, a]), torch.cat([b, b])
    x0, zeros = (pair_a + pair_b) / 2, torch.zeros(2)
    with torch.no_grad():
        together = unet(x0, pair_a, pair_b, zeros, torch.tensor([0, 3]))
        alone = [unet(x0[:1], a, b, zeros[:1], torch.tensor([task])) for task in (0, 3)]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=0)
    assert (alone[0] - alone[1]).abs().max() > 0.01  # the two tasks do fuse differently
    tiny = dict(output_head="pyramid", pyramid_levels=3, activity_scales=[[8.0] * 3] * 4)
    with pytest.raises(ValueError, match="one value or one per task"):
        build_unet("tiny", **tiny, consistency_epsilon=[0.1, 0.1])
    with pytest.raises(ValueError, match="consistency_sigma must be positive"):
        build_unet("tiny", **tiny, consistency_sigma=0.0)


def test_consistent_detail_logit_takes_one_epsilon_per_item():
    finest_a, finest_b = torch.full((2, 1, 4, 4), 0.003), torch.full((2, 1, 4, 4), 0.001)
    both = consistent_detail_logit(finest_a, finest_b, epsilon=torch.tensor([0.001, 0.03]))
    torch.testing.assert_close(both[:1], consistent_detail_logit(finest_a[:1], finest_b[:1], epsilon=0.001))
    torch.testing.assert_close(both[1:], consistent_detail_logit(finest_a[1:], finest_b[1:], epsilon=0.03))


def test_a_strong_activity_prior_is_the_max_abs_laplacian_prior(sources):
    """Logits 0 and detail strengths far above 1: each detail coefficient from the source with the larger
    magnitude, the base averaged (strength 0), which is the Laplacian-pyramid prior."""
    a, b = sources
    levels = pyramid_levels(*a.shape[-2:])
    fused = activity_fusion(a, b, torch.tensor([1e4] * (levels - 1) + [0.0]))
    prior = laplacian_pyramid_fusion(a, b)
    assert (fused - prior).abs().mean() < 1e-4
    average = blend_pyramids(a, b, torch.zeros(1, levels, 1, 1), torch.ones(1, levels - 1, 1, 1))
    assert (average - prior).abs().mean() > 0.01  # without the prior, logits 0 are the plain average


def _activity_unet(levels: int = 3) -> torch.nn.Module:
    scales = [[8.0] * (levels - 1) + [2.0], [16.0] * levels, [4.0] * levels, [1.0] * levels]
    return build_unet("tiny", output_head="pyramid", pyramid_levels=levels, activity_scales=scales)


def test_an_activity_prior_model_starts_as_the_prior_and_keeps_its_learned_strengths(sources, tmp_path):
    a, b = (x[..., :96, :112] for x in sources)
    unet = _activity_unet()
    x0, task = (a + b) / 2, torch.tensor([1])  # MIF: strength 16 on every level
    velocity = unet(x0, a, b, torch.zeros(1), task)
    expected = blend_pyramids(a, b, torch.zeros(1, 3, 1, 1), torch.ones(1, 2, 1, 1), torch.full((1, 3), 16.0))
    torch.testing.assert_close(x0 + velocity, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        unet.activity_scale[1] = torch.tensor([3.0, 5.0, 7.0])  # as training would move them
    unet.save_pretrained(tmp_path)
    loaded = FusionUNet.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.activity_scales_for(task), torch.tensor([[3.0, 5.0, 7.0]]))
    torch.testing.assert_close(loaded(x0, a, b, torch.zeros(1), task), unet(x0, a, b, torch.zeros(1), task))


def test_activity_scales_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="pyramid head only"):
        build_unet("tiny", activity_scales=[[1.0]] * 4)
    with pytest.raises(ValueError, match="one row of 3 strengths per task"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, activity_scales=[[1.0, 1.0]] * 4)


def test_task_gates_start_every_task_at_the_prior_and_move_only_with_its_own_data(sources):
    a, b = (x[..., :96, :112] for x in sources)
    torch.manual_seed(0)
    gated = build_unet("tiny", output_head="pyramid", pyramid_levels=3, task_gates=True,
                       activity_scales=[[16.0, 16.0, 2.0]] * 4)
    assert gated.unet.conv_out.weight.abs().sum() > 0  # the U-Net's own output is not zero, its gates are
    pair_a, pair_b = torch.cat([a, b]), torch.cat([b, a])
    tasks = torch.tensor([0, 3])  # IVF and MFF, no MIF or MEF
    x0 = (pair_a + pair_b) / 2
    velocity = gated(x0, pair_a, pair_b, torch.zeros(2), tasks)
    expected = blend_pyramids(pair_a, pair_b, torch.zeros(2, 3, 1, 1), torch.ones(2, 2, 1, 1),
                              torch.tensor([[16.0, 16.0, 2.0]] * 2))
    torch.testing.assert_close(x0 + velocity, expected, atol=1e-5, rtol=0)
    ((x0 + velocity) ** 2).mean().backward()
    moved = gated.task_gate.grad.abs().sum(dim=1)
    assert moved[0] > 0 and moved[3] > 0 and moved[1] == 0 and moved[2] == 0


def test_detail_gains_start_each_task_at_its_own_gains_and_are_kept_on_save(sources, tmp_path):
    a, b = (x[..., :96, :112] for x in sources)
    gains = [[1.05, 1.05], [1.0, 1.0], [1.2, 0.9], [1.05, 1.05]]
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, task_gates=True,
                      activity_scales=[[16.0, 16.0, 2.0]] * 4, detail_gains=gains)
    x0, task = (a + b) / 2, torch.tensor([2])  # MEF: 1.2 on the finest level, 0.9 on the next
    fused = x0 + unet(x0, a, b, torch.zeros(1), task)  # unclamped; the prior alone is clamped to [0, 1]
    expected = activity_fusion(a, b, torch.tensor([16.0, 16.0, 2.0]), torch.tensor([1.2, 0.9]))
    torch.testing.assert_close(fused.clamp(0, 1), expected, atol=1e-5, rtol=0)
    unit = activity_fusion(a, b, torch.tensor([16.0, 16.0, 2.0]))
    assert (fused - unit).abs().mean() > 1e-3  # the gains do change the fusion
    unet.save_pretrained(tmp_path)
    loaded = FusionUNet.from_pretrained(tmp_path)
    torch.testing.assert_close(x0 + loaded(x0, a, b, torch.zeros(1), task), fused)


def test_detail_gains_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="pyramid head only"):
        build_unet("tiny", detail_gains=[[1.0]] * 4)
    with pytest.raises(ValueError, match="one row of 2 gains per task"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, detail_gains=[[1.0]] * 4)
    with pytest.raises(ValueError, match="strictly between"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3, max_gain=2.0, detail_gains=[[2.0, 1.0]] * 4)


def _variant_unet(**overrides) -> FusionUNet:
    """A tiny pyramid U-Net whose MIF-CT variant starts at gain 1.3 on its finest level (its class MIF at 1.05)."""
    torch.manual_seed(0)
    config = dict(output_head="pyramid", pyramid_levels=3, task_gates=True, activity_scales=[[16.0, 16.0, 2.0]] * 4,
                  detail_gains=[[1.05, 1.05]] * 4, variant_detail_gains={"MIF-CT": [1.3, 1.05]})
    return build_unet("tiny", **{**config, **overrides}).eval()


def test_a_task_variant_starts_at_its_own_gains_and_shares_what_its_class_learned(sources, tmp_path):
    a, b = (x[..., :96, :112] for x in sources)
    unet, mif, zeros = _variant_unet(), torch.tensor([1]), torch.zeros(1)
    x0, scales = (a + b) / 2, torch.tensor([16.0, 16.0, 2.0])
    with torch.no_grad():
        ct, pet, family = (x0 + unet(x0, a, b, zeros, mif, gain_shifts=unet.gain_shifts_for([name]))
                           for name in ("MIF-CT", "mif_pet", "MIF"))
        unshifted = x0 + unet(x0, a, b, zeros, mif)
    torch.testing.assert_close(ct.clamp(0, 1), activity_fusion(a, b, scales, torch.tensor([1.3, 1.05])),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(ct.clamp(0, 1), activity_fusion(a, b, **start_prior(unet.config, 1, "MIF-CT")),
                               atol=1e-5, rtol=0)
    for other in (pet, family):  # the class's other variants and the family name keep the class's gains
        torch.testing.assert_close(other, unshifted, atol=0, rtol=0)
    torch.testing.assert_close(pet.clamp(0, 1), activity_fusion(a, b, scales, torch.tensor([1.05, 1.05])),
                               atol=1e-5, rtol=0)
    assert (ct - pet).abs().mean() > 1e-3
    # A trained class (gates open, offsets moved): the variant's gain pre-activation stays the class's plus the shift.
    with torch.no_grad():
        unet.task_gate.fill_(0.5)
        unet.gain_offset.add_(0.1)
        ct_gains, pet_gains = (unet.source_maps(x0, a, b, zeros, mif, unet.gain_shifts_for([name]))[1]
                               for name in ("MIF-CT", "MIF-PET"))
    assert ct_gains.std() > 0  # the network's gains vary per pixel
    pre_activation = lambda gains: torch.atanh(torch.log(gains.double()) / math.log(2.0))  # noqa: E731
    shift = math.atanh(math.log(1.3) / math.log(2.0)) - math.atanh(math.log(1.05) / math.log(2.0))
    difference = pre_activation(ct_gains) - pre_activation(pet_gains)
    torch.testing.assert_close(difference[:, 0], torch.full_like(difference[:, 0], shift), atol=1e-4, rtol=0)
    torch.testing.assert_close(difference[:, 1], torch.zeros_like(difference[:, 1]), atol=1e-4, rtol=0)
    unet.save_pretrained(tmp_path)
    loaded = FusionUNet.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.gain_shifts_for(["MIF-CT", "IVF"]), unet.gain_shifts_for(["MIF-CT", "IVF"]))
    assert unet.gain_shifts_for(["MIF-CT", "IVF"])[1].abs().max() == 0
    assert build_unet("tiny").gain_shifts_for(["MIF-CT"]) is None


def test_task_variant_gains_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="needs detail_gains"):
        _variant_unet(detail_gains=None)
    with pytest.raises(ValueError, match="names a whole task class"):
        _variant_unet(variant_detail_gains={"IVF": [1.3, 1.05]})
    with pytest.raises(ValueError, match="Unknown task 'MIF-XR'"):
        _variant_unet(variant_detail_gains={"MIF-XR": [1.3, 1.05]})
    with pytest.raises(ValueError, match=r"needs 2 gains, one per detail level, got 3"):
        _variant_unet(variant_detail_gains={"MIF-CT": [1.3, 1.05, 1.05]})
    with pytest.raises(ValueError, match="strictly between"):
        _variant_unet(variant_detail_gains={"MIF-CT": [2.5, 1.05]})
    with pytest.raises(ValueError, match="not a variant of class 0"):
        start_prior(_variant_unet().config, 0, "MIF-CT")


def test_the_pipeline_starts_each_pair_of_a_mixed_batch_at_its_variants_gains(real_pair):
    """A real MRI-CT pair fused as MIF-CT and as MIF-PET in one batch: the CT item is what a model whose MIF class
    starts at the CT gains makes of it, the PET item what the model without variants makes."""
    mri, ct = real_pair("MIF-CT")

    def pipeline(unet: FusionUNet) -> FusionFMPipeline:
        pipe = FusionFMPipeline(unet=unet, scheduler=FlowMatchFusionScheduler())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    options = dict(output_type="pt", compute_dtype="fp32", processing_resolution=0)
    both = pipeline(_variant_unet())([mri, mri], [ct, ct], task=["MIF-CT", "MIF-PET"], batch_size=2, **options)
    as_ct = pipeline(_variant_unet(variant_detail_gains=None, detail_gains=[[1.05, 1.05], [1.3, 1.05]] +
                                   [[1.05, 1.05]] * 2))(mri, ct, task="MIF", **options).images[0]
    as_pet = pipeline(_variant_unet(variant_detail_gains=None))(mri, ct, task="MIF", **options).images[0]
    torch.testing.assert_close(both.images[0], as_ct, atol=1e-6, rtol=0)
    torch.testing.assert_close(both.images[1], as_pet, atol=1e-6, rtol=0)
    assert (as_ct - as_pet).abs().mean() > 1e-3


def test_reset_task_returns_one_task_to_its_start_and_leaves_the_others(sources):
    a, b = (x[..., :96, :112] for x in sources)
    torch.manual_seed(0)
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, task_gates=True,
                      activity_scales=[[16.0, 16.0, 2.0]] * 4, detail_gains=[[1.05, 1.05]] * 4)
    with torch.no_grad():  # as training leaves them
        unet.task_gate.fill_(0.5)
        unet.activity_scale.add_(1.0)
        unet.gain_offset.add_(0.1)
    x0 = (a + b) / 2
    before = {task: x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([task])) for task in (0, 1)}
    unet.reset_task(1)
    start = activity_fusion(a, b, torch.tensor([16.0, 16.0, 2.0]), torch.tensor([1.05, 1.05]))
    reset = x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([1]))
    torch.testing.assert_close(reset.clamp(0, 1), start, atol=1e-5, rtol=0)
    assert (before[1] - reset).abs().mean() > 1e-3
    torch.testing.assert_close(x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([0])), before[0])
    with pytest.raises(ValueError, match="task_gates=True"):
        build_unet("tiny", output_head="pyramid", pyramid_levels=3).reset_task(1)


def test_moving_a_trained_tasks_start_keeps_what_it_learned(sources, tmp_path):
    a, b = (x[..., :96, :112] for x in sources)
    torch.manual_seed(0)
    config = dict(output_head="pyramid", pyramid_levels=3, task_gates=True, activity_scales=[[16.0, 16.0, 2.0]] * 4,
                  detail_gains=[[1.05, 1.05]] * 4, detail_consistency=[0.0] * 4, consistency_epsilon=0.03)
    unet = build_unet("tiny", **config)
    with torch.no_grad():  # as training leaves them
        unet.task_gate.fill_(0.5)
        unet.gain_offset.add_(0.1)
    x0 = (a + b) / 2
    before = {task: x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([task])) for task in range(4)}
    offsets_before = unet.gain_offset.detach().clone()
    unet.move_task_start(2, detail_gains=[1.1, 1.12], detail_consistency=0.9)
    # The learned correction stays: the pre-activation moved by exactly the difference of the two starts.
    moved_by = unet.gain_offset.detach() - offsets_before
    start_shift = torch.atanh(torch.log(torch.tensor([1.1, 1.12])) / math.log(2.0)) - math.atanh(
        math.log(1.05) / math.log(2.0))
    torch.testing.assert_close(moved_by[2], start_shift.float(), atol=1e-6, rtol=0)
    assert moved_by[[0, 1, 3]].abs().max() == 0
    for task in (0, 1, 3):
        torch.testing.assert_close(x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([task])), before[task])
    moved = x0 + unet(x0, a, b, torch.zeros(1), torch.tensor([2]))
    assert (moved - before[2]).abs().mean() > 1e-3
    # Saved and loaded it is the same model, and its start (a reset) is the new one.
    unet.save_pretrained(tmp_path / "moved")
    loaded = FusionUNet.from_pretrained(tmp_path / "moved")
    torch.testing.assert_close(x0 + loaded(x0, a, b, torch.zeros(1), torch.tensor([2])), moved)
    loaded.reset_task(2)
    start = activity_fusion(a, b, torch.tensor([16.0, 16.0, 2.0]), torch.tensor([1.1, 1.12]),
                            detail_consistency=0.9, consistency_epsilon=0.03, consistency_sigma=2.0)
    torch.testing.assert_close((x0 + loaded(x0, a, b, torch.zeros(1), torch.tensor([2]))).clamp(0, 1), start,
                               atol=1e-5, rtol=0)
    # A variant of a moved class keeps its own start (and the class's learned correction).
    variant = build_unet("tiny", **config, variant_detail_gains={"MIF-CT": [1.3, 1.05]})
    with torch.no_grad():
        variant.gain_offset.add_(0.1)
    start_of = lambda unet: unet.gain_offset[1] + unet.gain_shifts_for(["MIF-CT"])[0]  # noqa: E731
    ct_before = start_of(variant).detach().clone()
    variant.move_task_start(1, detail_gains=[1.2, 1.2])
    torch.testing.assert_close(start_of(variant).detach(), ct_before, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="needs 2 detail gains"):
        unet.move_task_start(2, detail_gains=[1.1])
    with pytest.raises(ValueError, match="strictly between"):
        unet.move_task_start(2, detail_gains=[1.1, 3.0])
    with pytest.raises(ValueError, match="detail_consistency must be in"):
        unet.move_task_start(2, detail_consistency=1.5)


def test_a_task_at_its_start_skips_the_unet_at_inference_with_the_same_result(sources):
    a, b = (x[..., :96, :112] for x in sources)
    torch.manual_seed(0)
    unet = build_unet("tiny", output_head="pyramid", pyramid_levels=3, task_gates=True,
                      activity_scales=[[16.0, 16.0, 2.0]] * 4, detail_gains=[[1.05, 1.05]] * 4)
    with torch.no_grad():
        unet.task_gate[0] = 0.5  # IVF trained, MIF at its start
    x0, tasks = (a + b) / 2, torch.tensor([1])
    calls = []
    hook = unet.unet.register_forward_hook(lambda *_: calls.append(1))
    computed = x0 + unet(x0, a, b, torch.zeros(1), tasks)  # gradients enabled: the U-Net runs
    assert len(calls) == 1
    with torch.no_grad():
        skipped = x0 + unet(x0, a, b, torch.zeros(1), tasks)
        assert len(calls) == 1  # not run
        unet(x0, a, b, torch.zeros(1), torch.tensor([0]))
        unet(torch.cat([x0, x0]), torch.cat([a, a]), torch.cat([b, b]), torch.zeros(2), torch.tensor([1, 0]))
    assert len(calls) == 3  # run whenever one item's task has a gate open
    # The stack path: skipped, the maps are one pixel each, and blend the frames as the full-size maps do.
    frames, t = torch.cat([a, b, x0]), torch.zeros(3)
    full_maps = unet.source_maps(frames, frames, x0.expand_as(frames), t, tasks.expand(3))
    with torch.no_grad():
        small_maps = unet.source_maps(frames, frames, x0.expand_as(frames), t, tasks.expand(3))
    assert small_maps[0].shape[-2:] == (1, 1) and full_maps[0].shape[-2:] == a.shape[-2:]
    scales = unet.activity_scales_for(tasks)[0].detach()
    torch.testing.assert_close(blend_stack(frames, *small_maps, scales),
                               blend_stack(frames, *(m.detach() for m in full_maps), scales), atol=1e-6, rtol=0)
    hook.remove()
    torch.testing.assert_close(skipped, computed.detach(), atol=0, rtol=0)
