"""fusionfm.unet: the band-wise output on the activity prior, task gates, start gains and variants, the start."""

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
from fusionfm.pyramid import (
    CONSISTENT_SIGMA,
    activity_fusion,
    blend_pyramids,
    consistent_detail_logit,
    laplacian_pyramid,
    mean_levels,
)
from fusionfm.stacks import blend_stack
from fusionfm.tasks import get_task


def test_the_pyramid_head_maps_its_outputs_to_weights_and_bounded_gains(ivf_crops):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    torch.manual_seed(0)
    unet = build_unet("tiny", activity_scales=None, task_gates=False, detail_gains=None)
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


def test_a_salient_base_measured_from_given_means_is_the_same_in_every_tile(ivf_crops):
    """Tiles fused with the whole image's means see the same salience as the whole image does (up to each
    tile's own pyramid); with each tile's own means they would not."""
    a, b = (x[..., :96, :112] for x in ivf_crops)
    unet = build_unet("tiny", activity_scales=[[8.0, 8.0, 4.0]] * 4,
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


def test_start_fusion_is_the_untrained_default_head_of_every_task(ivf_crops):
    """:meth:`FusionUNet.start_fusion` (the start the fidelity objective and the learning ledger measure from) fuses
    exactly as the untrained default preset does: its base rule, detail consistency, strengths and gains."""
    a, b = (x[..., :96, :96] for x in ivf_crops)
    unet = build_unet("default").eval()
    x0 = (a + b) / 2
    for task_id in range(4):
        tasks = torch.tensor([task_id])
        with torch.no_grad():
            head = x0 + unet(x0, a, b, torch.zeros(1), tasks, source_means=mean_levels(a, b))
        torch.testing.assert_close(head, unet.start_fusion(a, b, tasks, source_means=mean_levels(a, b)), atol=1e-5,
                                   rtol=0)


def test_a_sharper_base_keeps_the_in_focus_source_without_the_others_blurred_ghost(real_pair):
    """A real multi-focus pair (MFIFB lytro_01): where one source's detail is clearly the stronger (consistent map
    beyond +-0.2, a fifth of the image each), the default MFF prior with its sharper-source base stays closer to
    that source than the same prior with an averaged base (the previous MFF rule), whose coarse bands mix in the
    other source's blurred copy of the object. Measured: 1.40 vs 2.41 grey levels where a is sharp, 0.32 vs 0.43
    where b is."""
    processor = FusionImageProcessor()
    a, b = (luminance(processor.to_tensor_list(image)[0][None]) for image in real_pair("MFF"))
    preset, mff = UNET_PRESETS["default"], get_task("MFF").class_id
    assert preset["base_activity"][mff] == "sharper"
    scales = torch.tensor(preset["activity_scales"][mff])
    start = dict(scales=scales, detail_consistency=preset["detail_consistency"][mff],
                 consistency_epsilon=preset["consistency_epsilon"][mff], consistency_sigma=preset["consistency_sigma"])
    sharper = activity_fusion(a, b, **start, sharper_base=True)
    averaged = activity_fusion(a, b, **dict(start, scales=torch.cat([scales[:-1], torch.zeros(1)])))
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
    unet = build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
                      base_activity=["salient", "brighter", "brighter", "brighter"])
    unet.save_pretrained(tmp_path)
    assert FusionUNet.from_pretrained(tmp_path).salient_base.tolist() == [True, False, False, False]
    unet = build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
                      base_activity=["salient", "brighter", "brighter", "sharper"])
    unet.save_pretrained(tmp_path / "sharper")
    assert FusionUNet.from_pretrained(tmp_path / "sharper").sharper_base.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="one of brighter, salient, sharper per task"):
        build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
                   base_activity=["loudest"] * 4)
    with pytest.raises(ValueError, match="needs activity_scales"):
        build_unet("tiny", activity_scales=None, base_activity=["salient"] * 4)
    with pytest.raises(ValueError, match="one weight in \\[0, 1\\] per task"):
        build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
                   detail_consistency=[0.0, 1.5, 0.0, 0.0])
    unet = build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
                      detail_consistency=[0.0, 0.5, 0.0, 0.0])
    unet.save_pretrained(tmp_path / "consistent")
    assert FusionUNet.from_pretrained(tmp_path / "consistent").consistency_weight.tolist() == [0.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="consistency_epsilon must be positive"):
        build_unet("tiny", activity_scales=[[8.0] * 3] * 4,
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
    assert float(loaded.consistency_epsilons[2]) == pytest.approx(0.03)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    del config["consistency_epsilon"], config["consistency_sigma"]
    config_path.write_text(json.dumps(config))
    loaded = FusionUNet.from_pretrained(tmp_path)
    assert loaded.consistency_epsilons.tolist() == pytest.approx([1e-3] * 4)
    assert loaded.config.consistency_sigma == CONSISTENT_SIGMA == 2.0


def test_per_task_consistency_epsilons_fuse_a_mixed_batch_as_each_task_alone(ivf_crops):
    """An IVF item (epsilon 0.1) and an MFF item (0.03) in one batch fuse as each does alone, and a wrong number of
    epsilons or a sigma <= 0 is refused."""
    a, b = (x[..., :64, :64] for x in ivf_crops)
    unet = build_unet("default").eval()
    pair_a, pair_b = torch.cat([a, a]), torch.cat([b, b])
    x0, zeros = (pair_a + pair_b) / 2, torch.zeros(2)
    with torch.no_grad():
        together = unet(x0, pair_a, pair_b, zeros, torch.tensor([0, 3]))
        alone = [unet(x0[:1], a, b, zeros[:1], torch.tensor([task])) for task in (0, 3)]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=0)
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # the two tasks do fuse differently
    tiny = dict(activity_scales=[[8.0] * 3] * 4)
    with pytest.raises(ValueError, match="one value or one per task"):
        build_unet("tiny", **tiny, consistency_epsilon=[0.1, 0.1])
    with pytest.raises(ValueError, match="consistency_sigma must be positive"):
        build_unet("tiny", **tiny, consistency_sigma=0.0)


def _activity_unet(levels: int = 3) -> torch.nn.Module:
    scales = [[8.0] * (levels - 1) + [2.0], [16.0] * levels, [4.0] * levels, [1.0] * levels]
    return build_unet("tiny", pyramid_levels=levels, activity_scales=scales, detail_gains=None, task_gates=False)


def test_an_activity_prior_model_starts_as_the_prior_and_keeps_its_learned_strengths(ivf_crops, tmp_path):
    a, b = (x[..., :96, :112] for x in ivf_crops)
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
    with pytest.raises(ValueError, match="one row of 3 strengths per task"):
        build_unet("tiny", activity_scales=[[1.0, 1.0]] * 4)


def test_task_gates_start_every_task_at_the_prior_and_move_only_with_its_own_data(ivf_crops):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    torch.manual_seed(0)
    gated = build_unet("tiny", task_gates=True,
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


def test_detail_gains_start_each_task_at_its_own_gains_and_are_kept_on_save(ivf_crops, tmp_path):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    gains = [[1.05, 1.05], [1.0, 1.0], [1.2, 0.9], [1.05, 1.05]]
    unet = build_unet("tiny", task_gates=True,
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
    with pytest.raises(ValueError, match="one row of 2 gains per task"):
        build_unet("tiny", detail_gains=[[1.0]] * 4)
    with pytest.raises(ValueError, match="strictly between"):
        build_unet("tiny", max_gain=2.0, detail_gains=[[2.0, 1.0]] * 4)


def _variant_unet(**overrides) -> FusionUNet:
    """A tiny pyramid U-Net whose MIF-CT variant starts at gain 1.3 on its finest level (its class MIF at 1.05)."""
    torch.manual_seed(0)
    config = dict(task_gates=True, activity_scales=[[16.0, 16.0, 2.0]] * 4,
                  detail_gains=[[1.05, 1.05]] * 4, variant_detail_gains={"MIF-CT": [1.3, 1.05]})
    return build_unet("tiny", **{**config, **overrides}).eval()


def test_a_task_variant_starts_at_its_own_gains_and_shares_what_its_class_learned(ivf_crops, tmp_path):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    unet, mif, zeros = _variant_unet(), torch.tensor([1]), torch.zeros(1)
    x0, scales = (a + b) / 2, torch.tensor([16.0, 16.0, 2.0])
    with torch.no_grad():
        ct, pet, family = (x0 + unet(x0, a, b, zeros, mif, gain_shifts=unet.gain_shifts_for([name]))
                           for name in ("MIF-CT", "mif_pet", "MIF"))
        unshifted = x0 + unet(x0, a, b, zeros, mif)
    torch.testing.assert_close(ct.clamp(0, 1), activity_fusion(a, b, scales, torch.tensor([1.3, 1.05])),
                               atol=1e-5, rtol=0)
    start = unet.start_fusion(a, b, mif, unet.gain_shifts_for(["MIF-CT"]), source_means=mean_levels(a, b))
    torch.testing.assert_close(ct, start, atol=1e-5, rtol=0)
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


def test_reset_task_returns_one_task_to_its_start_and_leaves_the_others(ivf_crops):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    torch.manual_seed(0)
    unet = build_unet("tiny", task_gates=True,
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
        build_unet("tiny", task_gates=False).reset_task(1)


def test_a_task_at_its_start_skips_the_unet_at_inference_with_the_same_result(ivf_crops):
    a, b = (x[..., :96, :112] for x in ivf_crops)
    torch.manual_seed(0)
    unet = build_unet("tiny", task_gates=True,
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


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
def test_presets_predict_a_velocity_that_task_and_time_condition(preset):
    """With the gates open (as after training; closed gates skip the U-Net), both the task and the time change the
    output of every preset."""
    torch.manual_seed(0)
    unet = build_unet(preset).eval()
    with torch.no_grad():
        unet.task_gate.fill_(1.0)
    multiple = unet.size_multiple
    a, b = torch.rand(2, 2, 1, multiple * 2, multiple * 3).unbind(0)
    x = (a + b) / 2
    with torch.no_grad():
        velocity = unet(x, a, b, torch.tensor([0.0, 0.5]), torch.tensor([0, 3]))
        other_task = unet(x, a, b, torch.tensor([0.0, 0.5]), torch.tensor([1, 2]))
        other_time = unet(x, a, b, torch.tensor([0.9, 0.1]), torch.tensor([0, 3]))
    assert velocity.shape == x.shape and torch.isfinite(velocity).all()
    assert (velocity - other_task).abs().max() > 1e-4 and (velocity - other_time).abs().max() > 1e-4


def test_default_preset_size_and_unknown_presets():
    unet = build_unet("default")
    assert unet.size_multiple == 32 and unet.output_channels == 9
    assert 2_000_000 < sum(p.numel() for p in unet.parameters()) < 3_000_000
    assert not unet.config.mid_block_attention
    with pytest.raises(ValueError, match="Unknown U-Net preset 'huge'. Known presets: default, tiny"):
        build_unet("huge")


def test_training_only_one_tasks_parameters_leaves_every_other_task_exactly_as_it_was():
    torch.manual_seed(0)
    unet = build_unet("tiny")
    with torch.no_grad():
        unet.task_gate.fill_(0.5)
    optimizer = torch.optim.AdamW(unet.train_only_tasks([0]), lr=0.1, weight_decay=0.0)
    a, b = torch.rand(2, 1, 1, 32, 32).unbind(0)
    x0 = (a + b) / 2

    def fusions() -> list[torch.Tensor]:
        with torch.no_grad():
            return [unet(x0, a, b, torch.zeros(1), torch.tensor([task])) for task in range(4)]

    before = fusions()
    for _ in range(3):
        unet(x0, a, b, torch.zeros(1), torch.tensor([0])).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = fusions()
    assert (after[0] - before[0]).abs().max() > 1e-3
    for task in (1, 2, 3):
        torch.testing.assert_close(after[task], before[task], atol=0, rtol=0)
