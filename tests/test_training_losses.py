"""fusionfm.training.losses: the flow-matching loss, its edge term and the endpoint objectives, by hand."""

from __future__ import annotations

import pytest
import torch

from fusionfm import FusionImageProcessor, build_unet
from fusionfm.color import luminance
from fusionfm.metrics.fusion import qabf, to_gray_255
from fusionfm.priors import run_prior
from fusionfm.pyramid import activity_fusion
from fusionfm.scheduler import FlowMatchFusionScheduler
from fusionfm.tasks import get_task
from fusionfm.training.continual import ReplayBuffer
from fusionfm.training.losses import (
    DEFAULT_ENDPOINT_TERMS,
    ENDPOINT_LOSS_WEIGHTS,
    ENDPOINT_TERMS,
    endpoint_terms,
    flow_matching_loss,
    fusion_loss,
    intensity_target,
    soft_qabf,
)
from fusionfm.training.sampler import BatchSampler


def test_gradient_loss_term_penalises_edge_errors_only():
    """With a model that returns the target velocity plus an error image, the gradient term adds the
    weighted mean squared differences of that error: zero for a constant offset, positive for a ramp."""
    height, width = 6, 5
    x0, x1 = torch.rand(2, 1, 1, height, width, generator=torch.Generator().manual_seed(0))
    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.3]), "image_a": x0, "image_b": x1,
             "task_id": torch.tensor([0])}
    ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, height, width) * 0.1

    def model_with_error(error):
        return lambda x_t, a, b, t, task: (x1 - x0) + error

    constant = flow_matching_loss(model_with_error(torch.full_like(x0, 0.2)), batch, 4.0)
    torch.testing.assert_close(constant, torch.tensor([0.04]))
    plain = flow_matching_loss(model_with_error(ramp), batch, 0.0)
    with_edges = flow_matching_loss(model_with_error(ramp), batch, 4.0)
    torch.testing.assert_close(plain, (ramp**2).mean().reshape(1))
    torch.testing.assert_close(with_edges, plain + 4.0 * 0.01)  # horizontal steps of 0.1, none vertical


def test_the_model_sees_the_point_on_the_path():
    x0 = torch.zeros(1, 1, 2, 2)
    x1 = torch.ones(1, 1, 2, 2)
    seen = {}

    def model(x_t, a, b, t, task):
        seen["x_t"] = x_t
        return torch.zeros_like(x_t)

    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.25]), "image_a": x0, "image_b": x1,
             "task_id": torch.tensor([1])}
    loss = flow_matching_loss(model, batch)
    torch.testing.assert_close(seen["x_t"], torch.full_like(x0, 0.25))
    torch.testing.assert_close(loss, torch.tensor([1.0]))  # velocity target 1 everywhere, prediction 0


IVF, MEF, MFF = (torch.tensor([get_task(name).class_id]) for name in ("IVF", "MEF", "MFF"))


def test_intensity_targets_by_hand():
    a = torch.tensor([[[[0.2, 0.9, 0.45]]]])
    b = torch.tensor([[[[0.6, 0.1, 0.7]]]])
    torch.testing.assert_close(intensity_target(a, b, IVF), torch.tensor([[[[0.6, 0.9, 0.7]]]]))  # the brighter
    torch.testing.assert_close(intensity_target(a, b, MEF), torch.tensor([[[[0.6, 0.9, 0.45]]]]))  # closer to 0.5
    a, b = (x.repeat(1, 1, 12, 4) for x in (a, b))  # 12 x 12 images with those three columns, 4 times each
    endpoint = torch.full_like(a, 0.5)
    terms = endpoint_terms(endpoint, a, b, IVF)
    torch.testing.assert_close(terms["intensity"], torch.tensor([(0.1 + 0.4 + 0.2) / 3]))


def test_gradient_term_by_hand():
    """A ramp of slope 0.05 per pixel against flat sources: Sobel (normalised, replicate border) gives 0.05 inside
    and 0.025 in the two border columns, so the term is the mean of those magnitudes."""
    ramp = (torch.arange(12, dtype=torch.float32) * 0.05).expand(1, 1, 12, 12).contiguous()
    flat = torch.full_like(ramp, 0.3)
    terms = endpoint_terms(ramp, flat, flat, MFF)
    torch.testing.assert_close(terms["gradient"], torch.tensor([(2 * 0.025 + 10 * 0.05) / 12]), atol=1e-5, rtol=0)
    same = endpoint_terms(ramp, ramp, flat, MFF)  # the endpoint has exactly the stronger source's edges
    torch.testing.assert_close(same["gradient"], torch.tensor([0.0]), atol=1e-5, rtol=0)


def test_structure_term_by_hand():
    """Constant images: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = 0.01^2 (the contrast term is
    1), so an endpoint equal to a = 0.2 against b = 0.6 scores 1 - (1 + 0.24.../0.40...) / 2."""
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    expected = 1 - (1 + (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)) / 2
    torch.testing.assert_close(endpoint_terms(a, a, b, IVF)["structure"], torch.tensor([expected]), atol=1e-4,
                               rtol=0)  # kornia adds eps = 1e-12 and pads by reflection; 3e-5 off at most
    torch.testing.assert_close(endpoint_terms(a, a, a, IVF)["structure"], torch.tensor([0.0]), atol=1e-6, rtol=0)


def test_edge_term_ranks_real_fusions_as_the_benchmark_qabf_does(real_pair):
    """On a real infrared-visible pair: GFF above the plain average, on both the soft term and the metric, and the
    term has finite gradients everywhere (flat regions included), also under bf16 autocast."""
    a, b = (to_gray_255(image).reshape(1, 1, *image.size[::-1])[..., :256, :256] / 255 for image in real_pair("IVF"))
    average = ((a + b) / 2).requires_grad_()
    gff = run_prior("gff", a, b, "IVF")
    assert soft_qabf(gff, a, b).sum() > soft_qabf(average, a, b).sum() + 0.1
    assert qabf(gff * 255, a * 255, b * 255) > qabf(average.detach() * 255, a * 255, b * 255) + 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs it (bf16 alone gives NaN slopes)
        soft_qabf(average, a, b).sum().backward()
    assert torch.isfinite(average.grad).all() and average.grad.abs().max() > 0


def test_fusion_loss_adds_the_weighted_endpoint_terms_of_the_one_step_endpoint():
    generator = torch.Generator().manual_seed(0)
    x0, x1, a, b = torch.rand(4, 2, 1, 16, 16, generator=generator)
    task_id = torch.cat([IVF, MEF])
    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.0, 0.5]), "image_a": a, "image_b": b, "task_id": task_id}

    def exact(x_t, image_a, image_b, t, task):  # the true velocity: flow term 0, endpoint = x1
        return x1 - x0

    loss = fusion_loss(exact, batch, endpoint_weight=2.0)
    terms = endpoint_terms(x1, a, b, task_id)
    expected = sum(2.0 * torch.tensor([ENDPOINT_LOSS_WEIGHTS[f][term] for f in ("IVF", "MEF")]) * terms[term]
                   for term in DEFAULT_ENDPOINT_TERMS)  # edges is opt-in
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    every = fusion_loss(exact, batch, endpoint_weight=2.0, use_terms=ENDPOINT_TERMS)
    edges = 2.0 * torch.tensor([ENDPOINT_LOSS_WEIGHTS[f]["edges"] for f in ("IVF", "MEF")]) * terms["edges"]
    torch.testing.assert_close(every, expected + edges, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fusion_loss(exact, batch), torch.zeros(2), atol=1e-6, rtol=0)
    # The per-term ablation: only the named terms count.
    gradient_only = fusion_loss(exact, batch, endpoint_weight=2.0, use_terms=("gradient",))
    weights = torch.tensor([ENDPOINT_LOSS_WEIGHTS[f]["gradient"] for f in ("IVF", "MEF")])
    torch.testing.assert_close(gradient_only, 2.0 * weights * terms["gradient"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown endpoint terms"):
        fusion_loss(exact, batch, endpoint_weight=2.0, use_terms=("sharpness",))


def test_the_label_weight_scales_the_pseudo_label_term_only():
    generator = torch.Generator().manual_seed(1)
    x0, x1, a, b = torch.rand(4, 1, 1, 16, 16, generator=generator)
    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.0]), "image_a": a, "image_b": b, "task_id": IVF}

    def off_by_a_tenth(x_t, image_a, image_b, t, task):  # endpoint x1 + 0.1: label error 0.01
        return x1 - x0 + 0.1

    label_only = fusion_loss(off_by_a_tenth, batch, label_weight=3.0)
    torch.testing.assert_close(label_only, torch.tensor([0.03]), atol=1e-6, rtol=0)
    endpoint_only = fusion_loss(off_by_a_tenth, batch, endpoint_weight=1.0, label_weight=0.0)
    terms = endpoint_terms(x1 + 0.1, a, b, IVF)
    expected = sum(ENDPOINT_LOSS_WEIGHTS["IVF"][term] * terms[term] for term in DEFAULT_ENDPOINT_TERMS)
    torch.testing.assert_close(endpoint_only, expected, atol=1e-5, rtol=1e-5)


class _OneCrop:
    """Stands in for :class:`fusionfm.training.datasets.LabelledPairs`: one real MRI-CT crop labelled MIF-CT."""

    def __init__(self, crop: dict) -> None:
        self.crop = crop

    def __len__(self) -> int:
        return 1

    def random_crop(self, index, size, generator, flip=True) -> dict:
        return self.crop


def test_training_starts_a_task_variant_where_inference_does(real_pair):
    """A batch of MRI-CT crops whose label is the CT variant's start (finest gain 1.3, the MIF class 1.05): the
    sampler adds the variant's gain shifts, and with them the untrained model's flow loss is ~0; without them (the
    class's start) it is not."""
    unet = build_unet("tiny", task_gates=True,
                      activity_scales=[[16.0, 16.0, 2.0]] * 4, detail_gains=[[1.05, 1.05]] * 4,
                      variant_detail_gains={"MIF-CT": [1.3, 1.05]})
    processor = FusionImageProcessor()
    # Squeezed into [0.25, 0.75], so that no fused value leaves [0, 1] (the label is clipped there, the model's
    # estimate is not: the gain's overshoot along the skull reaches about 0.12 at half contrast).
    mri, ct = (0.25 + 0.5 * luminance(processor.to_tensor_list(image)[0][None])[0, :, 64:128, 64:128]
               for image in real_pair("MIF-CT"))
    label = activity_fusion(mri[None], ct[None], torch.tensor([16.0, 16.0, 2.0]), torch.tensor([1.3, 1.05]))[0]
    crop = {"image_a": mri, "image_b": ct, "target": label, "task_id": get_task("MIF").class_id, "task": "MIF-CT"}
    sampler = BatchSampler({"MIF": _OneCrop(crop)}, ReplayBuffer(0), FlowMatchFusionScheduler(), 64, flip=False,
                           gain_shifts_for=unet.gain_shifts_for)
    batch, _ = sampler.draw(["MIF"], 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch["gain_shifts"], unet.gain_shifts_for(["MIF-CT", "MIF-CT"]))
    assert batch["gain_shifts"][:, 0].min() > 0.3 and batch["gain_shifts"][:, 1].abs().max() == 0
    batch["t"] = torch.tensor([0.0, 0.5])  # near t = 1 the model bounds 1 / (1 - t): its velocity misses the label
    with torch.no_grad():
        shifted = fusion_loss(unet, batch)
        unshifted = fusion_loss(unet, {key: value for key, value in batch.items() if key != "gain_shifts"})
    assert shifted.max() < 1e-6 and unshifted.min() > 1e-5  # measured: 1e-15 against 4e-4 and 1.4e-3
