"""The velocity network: a diffusers ``UNet2DModel`` on [x_t, a, b] with the task as class embedding.

``FusionUNet`` wraps ``UNet2DModel`` for one reason, speed: it packs each block of pixels (4x4 in the default
preset) into channels (pixel unshuffle) before the U-Net and unpacks its output maps after it, so the U-Net runs on
a sixteenth of the pixels. On 2 CPU cores at 640x480 in bf16 a whole call of the default preset takes about 80 ms,
against about 125 ms with 2x2 blocks and about 230 ms for the same widths at full resolution, with no information
lost (the packing is a lossless rearrangement). It also gives the network named inputs, so callers never
concatenate channels or scale time themselves.

Output heads. ``"velocity"``: the U-Net's output is the velocity. ``"weight"`` (the first shipped model): the U-Net
outputs a per-pixel weight logit w; the predicted fused image is x1_hat = sigmoid(w) a + (1 - sigmoid(w)) b,
and the velocity is the one that reaches it, (x1_hat - x_t) / (1 - t). ``"gated"`` adds a free residual r
to x1_hat; measured, that residual learned a bias and noise (8 grey levels on MRI backgrounds) that cost
more than it gave, so the presets leave it out. Fusion is mostly a per-pixel choice between the sources,
and a U-Net whose last layer follows a GroupNorm reproduces source pixels only approximately: with the
``"velocity"`` head the first default model stayed below plain averaging on every task (model_card.md).
``"pyramid"`` (the default preset) predicts such a weight per Laplacian
level and a bounded contrast gain per detail level; x1_hat is the collapsed blended pyramid
(:func:`fusionfm.pyramid.blend_pyramids`): band-wise fusion as the Laplacian-pyramid and guided-filter priors do
it, which one convex weight per pixel cannot express. With ``activity_scales`` each level's logit is a correction
to an activity prior, a softened max-abs choice of the detail coefficients and a brighter-source (or, per task with
``base_activity``, a more-salient-source) choice of the base (:func:`fusionfm.pyramid.activity_logit`,
:func:`fusionfm.pyramid.salience_logit`), of a learned strength per task and level: the network starts as a
Laplacian-pyramid fusion and learns what to change, instead of learning the per-coefficient choice from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .pyramid import ACTIVITY_EPSILON, BASE_ACTIVITIES, CONSISTENT_SIGMA, blend_pyramids
from .tasks import NUM_TASK_CLASSES, get_task

OUTPUT_HEADS = ("velocity", "weight", "gated", "pyramid")


def head_channels(output_head: str, pyramid_levels: int) -> int:
    """Output channels per pixel of a head: the pyramid head has a weight map per level and a gain map per
    detail level."""
    return {"velocity": 1, "weight": 1, "gated": 2, "pyramid": 2 * pyramid_levels - 1}[output_head]


def _per_task(value: float | list[float], num_tasks: int) -> list[float] | None:
    """A config value given once for every task or once per task, as one float per task (None: a list of
    the wrong length)."""
    if isinstance(value, (int, float)):
        return [float(value)] * num_tasks
    return [float(item) for item in value] if len(value) == num_tasks else None


def _gain_offsets(detail_gains: list[list[float]], max_gain: float) -> torch.Tensor:
    """(tasks, levels - 1) offsets before the gain's tanh that give ``detail_gains`` at a network output of 0
    (gain = max_gain ** tanh(output + offset))."""
    gains = torch.tensor(detail_gains, dtype=torch.float64)
    return torch.atanh(torch.log(gains) / math.log(max_gain)).float()


def _variant_gain_shifts(variant_detail_gains: dict[str, list[float]] | None, detail_gains: list[list[float]] | None,
                         max_gain: float, num_tasks: int) -> dict[str, torch.Tensor]:
    """Task name -> (levels - 1,) shift of its class's gain pre-activation that starts it at its own gains."""
    if not variant_detail_gains:
        return {}
    if detail_gains is None:
        raise ValueError("variant_detail_gains needs detail_gains (it shifts a class's starting gains).")
    shifts = {}
    for name, gains in variant_detail_gains.items():
        task = get_task(name)  # an unknown name is refused with the list of known tasks
        if task.name == task.family:
            raise ValueError(f"variant_detail_gains: {name!r} names a whole task class, not a variant of one (such as "
                             f"'MIF-CT'); set that class's start in detail_gains.")
        if task.class_id >= num_tasks:
            raise ValueError(f"variant_detail_gains: task {name!r} has class id {task.class_id}, but the model "
                             f"embeds {num_tasks} tasks.")
        if len(gains) != len(detail_gains[task.class_id]):
            raise ValueError(f"variant_detail_gains[{name!r}] needs {len(detail_gains[task.class_id])} gains, one per "
                             f"detail level, got {len(gains)}.")
        if any(not 1 / max_gain < gain < max_gain for gain in gains):
            raise ValueError(f"variant_detail_gains[{name!r}] must lie strictly between 1 / max_gain and max_gain "
                             f"({max_gain}), got {gains!r}.")
        class_row = _gain_offsets([detail_gains[task.class_id]], max_gain)[0]
        shifts[task.name] = _gain_offsets([gains], max_gain)[0] - class_row
    return shifts


_ACTIVITY_PYRAMID: dict[str, Any] = dict(
    block_out_channels=(16, 32, 64, 128), layers_per_block=1, norm_num_groups=8, mid_block_attention=False,
    output_head="pyramid", pyramid_levels=5, max_gain=2.0, smooth_weights=False, task_gates=True,
    activity_scales=[[detail] * 4 + [base] for detail, base in ((128.0, 4.0), (64.0, 16.0), (16.0, 2.0), (16.0, 32.0))],
    base_activity=["salient", "brighter", "brighter", "sharper"], detail_consistency=[0.95, 0.9, 0.0, 1.0],
    consistency_epsilon=[0.1, 0.1, 0.03, 0.03], consistency_sigma=5.0,
    detail_gains=[[1.1] * 4, [1.02] * 4, [1.04] * 4, [1.04, 1.04, 1.04, 1.1]],
    variant_detail_gains={"MIF-CT": [1.35, 1.02, 1.02, 1.02]})

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # For tests: a few thousand parameters, milliseconds per call.
    "tiny": dict(patch_size=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                 mid_block_attention=False, output_head="weight"),
    # The shipped model: a 4x4 pixel unshuffle, widths 16-32-64-128 at 1/4, 1/8, 1/16 and 1/32 of the image, purely
    # convolutional, band-wise output (a weight map per level of a 5-level Laplacian pyramid, a gain in [1/2, 2] per
    # detail level) on top of the activity prior (detail strengths IVF 128, MIF 64, MEF and MFF 16; base: IVF the
    # more salient source, strength 4, MIF and MEF the brighter one, strengths 16 and 2, MFF the sharper one (the
    # consistent detail map), strength 32; the detail
    # choice of IVF, MIF and MFF 0.95, 0.9 and 1 from one consistent map smoothed over 5 pixels, even where both
    # sources are flat: epsilon 0.1, 0.1 and 0.03) and starting detail gains (IVF 1.1, MIF 1.02 and MRI-CT 1.35 on
    # its finest detail level, MEF 1.04, MFF 1.04 and 1.1 on its coarsest detail level), with per-task gates that
    # start at 0.
    # Each choice scored highest on the validation split (docs/quality.md; IVF and MIF: the highest whose SF, AG and
    # Qabf reach the best built-in prior's, as the quality goal asks); the 4x4 unshuffle scored as high as the
    # 2x2 one ("patch2") over three seeds and takes about 1.5x less time. Mid-block attention: about 20 % more time.
    "default": dict(_ACTIVITY_PYRAMID, patch_size=4),
    # The session-11 shipped model's architecture: the same on a 2x2 pixel unshuffle (to compare speed with).
    "patch2": dict(_ACTIVITY_PYRAMID, patch_size=2),
    # The previous shipped model's architecture: the pyramid head on 4 levels without the activity prior.
    "pyramid": dict(patch_size=2, block_out_channels=(16, 32, 64, 128), layers_per_block=1, norm_num_groups=8,
                    mid_block_attention=False, output_head="pyramid", pyramid_levels=4, max_gain=2.0,
                    smooth_weights=False),
    # The first shipped model's architecture: one convex source weight per pixel (kept to compare speed and
    # quality with, and for models saved with it).
    "weight": dict(patch_size=2, block_out_channels=(16, 32, 64, 128), layers_per_block=1,
                   norm_num_groups=8, mid_block_attention=False, output_head="weight"),
    # Twice the width and mid-block attention, for GPUs or when speed matters less.
    "large": dict(patch_size=2, block_out_channels=(32, 64, 128, 256), layers_per_block=2, norm_num_groups=8,
                  mid_block_attention=True, output_head="pyramid", pyramid_levels=4, max_gain=2.0),
}


class FusionUNet(ModelMixin, ConfigMixin):
    """Predicts the flow velocity v(x_t, t | a, b, task).

    The defaults are the ``"default"`` preset, the shipped model's architecture.

    Args:
        patch_size: pixels per side packed into channels before the U-Net (1 = none).
        block_out_channels: widths of the U-Net levels.
        layers_per_block: ResNet blocks per level.
        norm_num_groups: GroupNorm groups (must divide every width).
        mid_block_attention: self-attention in the U-Net's lowest level.
        num_tasks: size of the task class embedding.
        time_scale: t in [0, 1] is fed to the sinusoidal time embedding as t * time_scale.
        output_head: ``"velocity"`` (the U-Net predicts v), ``"weight"`` (a per-pixel source weight),
            ``"gated"`` (a source weight and a residual) or ``"pyramid"`` (a weight per Laplacian level and a gain
            per detail level); see the module docstring.
        min_remaining_time: the weight heads divide by max(1 - t, this), so times near 1 stay bounded.
        pyramid_levels: Laplacian levels of the ``"pyramid"`` head.
        max_gain: the pyramid head's detail gains lie in [1 / max_gain, max_gain].
        activity_scales: (pyramid head) per task and level, the starting strength of the activity prior: the
            level's weight logit is the network's plus this times :func:`fusionfm.pyramid.activity_logit` of the
            sources' bands (a softened max-abs choice of details, a brighter-source choice of the base). The
            strengths are trained with the network. None: the network's logits alone (models saved before it).
        base_activity: (pyramid head, with ``activity_scales``) per task, how the base band's prior compares the
            sources: ``"brighter"``, ``"salient"`` or ``"sharper"`` (:data:`fusionfm.pyramid.BASE_ACTIVITIES`; the
            last follows the consistent detail map below, with its epsilon and sigma). None: brighter for
            every task (models saved before it). Stacks of frames (MEF, MFF) always compare brightness.
        detail_consistency: (pyramid head, with ``activity_scales``) per task, the weight in [0, 1] of one choice
            for all detail levels (:func:`fusionfm.pyramid.consistent_detail_logit`) against each band's own;
            None: 0 for every task (models saved before it). Stacks of frames use each band's own.
        consistency_epsilon: the ``epsilon`` of that consistent map (luminance units), one for every task or one
            per task: above the finest bands' noise, it leaves the choice even where both sources are flat. 0.001:
            models saved before it.
        consistency_sigma: the Gaussian smoothing (finest-band pixels) of that map's magnitudes.
            :data:`fusionfm.pyramid.CONSISTENT_SIGMA` (2): models saved before it.
        detail_gains: (pyramid head) per task and detail level, the gain at a network output of 0 (each in
            (1 / max_gain, max_gain); 1 leaves the sources' contrast as it is). Held as a learned offset before the
            gain's tanh, trained with the network. None: every gain starts at 1 (models saved before it).
        variant_detail_gains: (with ``detail_gains``) start gains of task variants that share a class id (the keys
            are task names such as ``"MIF-CT"``; the Harvard modalities share the MIF class), one per detail level.
            A variant's gain pre-activation is its class's shifted by the difference of the two rows' offsets
            (:meth:`gain_shifts_for`), so it starts at these gains and a trained class's corrections carry over.
            None or a variant not named: the class's gains.
        task_gates: multiply the output maps by learned per-task, per-channel gates that start at 0, so every task
            starts at logits 0 and gains 1 (with ``activity_scales``: the activity prior) and a task's outputs move
            only as far as its own data asks, not with the weights shared with the other tasks.
        smooth_weights: the weight heads output one map value per packed patch, upsampled bilinearly, instead of
            one per pixel through the pixel shuffle (whose per-pixel values in each 2x2 block can form a 2-pixel
            checkerboard in the fused image). The pyramid head takes these maps at the patch resolution and fits
            them to each level (only the finest level upsamples).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        patch_size: int = 2,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        mid_block_attention: bool = False,
        num_tasks: int = NUM_TASK_CLASSES,
        time_scale: float = 1000.0,
        output_head: str = "pyramid",
        min_remaining_time: float = 0.05,
        pyramid_levels: int = 4,
        max_gain: float = 2.0,
        smooth_weights: bool = False,
        activity_scales: list[list[float]] | None = None,
        task_gates: bool = False,
        detail_gains: list[list[float]] | None = None,
        base_activity: list[str] | None = None,
        detail_consistency: list[float] | None = None,
        consistency_epsilon: float | list[float] = ACTIVITY_EPSILON,
        consistency_sigma: float = CONSISTENT_SIGMA,
        variant_detail_gains: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        if output_head not in OUTPUT_HEADS:
            raise ValueError(f"Unknown output_head {output_head!r}; choose one of {', '.join(OUTPUT_HEADS)}.")
        if activity_scales is not None:
            if output_head != "pyramid":
                raise ValueError("activity_scales applies to the pyramid head only.")
            if len(activity_scales) != num_tasks or any(len(row) != pyramid_levels for row in activity_scales):
                raise ValueError(f"activity_scales needs one row of {pyramid_levels} strengths per task "
                                 f"({num_tasks} rows).")
            # Learned with the network; the config holds the starting values.
            self.activity_scale = torch.nn.Parameter(torch.tensor(activity_scales, dtype=torch.float32))
        if base_activity is not None:
            if activity_scales is None:
                raise ValueError("base_activity needs activity_scales (it says how their base prior compares).")
            if len(base_activity) != num_tasks or any(mode not in BASE_ACTIVITIES for mode in base_activity):
                raise ValueError(f"base_activity needs one of {', '.join(BASE_ACTIVITIES)} per task ({num_tasks}), "
                                 f"got {base_activity!r}.")
        if detail_consistency is not None:
            if activity_scales is None:
                raise ValueError("detail_consistency needs activity_scales (it weighs their detail prior).")
            if len(detail_consistency) != num_tasks or any(not 0 <= weight <= 1 for weight in detail_consistency):
                raise ValueError(f"detail_consistency needs one weight in [0, 1] per task ({num_tasks}), "
                                 f"got {detail_consistency!r}.")
        epsilons = _per_task(consistency_epsilon, num_tasks)
        if epsilons is None or any(not epsilon > 0 for epsilon in epsilons):
            raise ValueError(f"consistency_epsilon must be positive, one value or one per task ({num_tasks}), "
                             f"got {consistency_epsilon!r}.")
        if not consistency_sigma > 0:
            raise ValueError(f"consistency_sigma must be positive, got {consistency_sigma!r}.")
        rules = base_activity or ["brighter"] * num_tasks
        # Derived from the config, so not saved with the weights.
        self.register_buffer("salient_base", torch.tensor([rule == "salient" for rule in rules]), persistent=False)
        self.register_buffer("sharper_base", torch.tensor([rule == "sharper" for rule in rules]), persistent=False)
        self.register_buffer("consistency_weight", torch.tensor(detail_consistency or [0.0] * num_tasks),
                             persistent=False)
        self.register_buffer("consistency_epsilons", torch.tensor(epsilons), persistent=False)
        if detail_gains is not None:
            if output_head != "pyramid":
                raise ValueError("detail_gains applies to the pyramid head only.")
            if len(detail_gains) != num_tasks or any(len(row) != pyramid_levels - 1 for row in detail_gains):
                raise ValueError(f"detail_gains needs one row of {pyramid_levels - 1} gains per task "
                                 f"({num_tasks} rows).")
            if any(not 1 / max_gain < gain < max_gain for row in detail_gains for gain in row):
                raise ValueError(f"detail_gains must lie strictly between 1 / max_gain and max_gain ({max_gain}).")
            self.gain_offset = torch.nn.Parameter(_gain_offsets(detail_gains, max_gain))
        self._variant_gain_shifts = _variant_gain_shifts(variant_detail_gains, detail_gains, max_gain, num_tasks)
        if smooth_weights and output_head == "velocity":
            raise ValueError("smooth_weights applies to the weight heads, not to output_head='velocity'.")
        levels = len(block_out_channels)
        packed = patch_size * patch_size
        self.unet = UNet2DModel(
            in_channels=3 * packed,
            out_channels=head_channels(output_head, pyramid_levels) * (1 if smooth_weights else packed),
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            add_attention=mid_block_attention,
            attention_head_dim=8,
            num_class_embeds=num_tasks,
        )
        if task_gates:
            # Zero-initialised per-task, per-channel gates on the output maps (as ReZero and ControlNet's zero
            # convolutions): each task starts at logits 0 and gains 1 and leaves them only as its own data asks.
            self.task_gate = torch.nn.Parameter(torch.zeros(num_tasks, head_channels(output_head, pyramid_levels)))
        elif activity_scales is not None:
            # Start as the activity prior itself (logits 0, gains 1): training learns corrections to it.
            torch.nn.init.zeros_(self.unet.conv_out.weight)
            torch.nn.init.zeros_(self.unet.conv_out.bias)

    @property
    def size_multiple(self) -> int:
        """Heights and widths must be multiples of this (pad with the image processor)."""
        return self.config.patch_size * 2 ** (len(self.config.block_out_channels) - 1)

    def _raw_output(self, x_t: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, t: torch.Tensor,
                    task_ids: torch.Tensor) -> torch.Tensor:
        """The U-Net's output maps at the image (or, with smooth weights, the patch) resolution."""
        patch = self.config.patch_size
        if self.config.task_gates and not torch.is_grad_enabled() and not self.task_gate[task_ids.long()].any():
            # Every item's task is at its start (gates 0): the U-Net's output would be multiplied by 0, so skip it.
            # (Not while training: the gates' gradient needs that output.) The weight heads get maps of one pixel,
            # which broadcast over every pyramid level: full-size maps of zeros cost a third of such a call.
            channels = head_channels(self.config.output_head, self.config.pyramid_levels)
            height, width = x_t.shape[-2:] if self.config.output_head == "velocity" else (1, 1)
            return x_t.new_zeros(x_t.shape[0], channels, height, width, dtype=torch.float32)
        inputs = torch.cat([x_t, image_a, image_b], dim=1)
        if patch > 1:
            inputs = F.pixel_unshuffle(inputs, patch)
        timesteps = t.to(dtype=torch.float32) * self.config.time_scale
        output = self.unet(inputs, timesteps, class_labels=task_ids.long()).sample
        if patch > 1 and self.config.smooth_weights and self.config.output_head != "pyramid":
            output = F.interpolate(output.float(), scale_factor=patch, mode="bilinear", align_corners=False)
        elif patch > 1 and not self.config.smooth_weights:
            output = F.pixel_shuffle(output, patch)
        if self.config.task_gates:
            output = output * self.task_gate.to(output.dtype)[task_ids.long()][:, :, None, None]
        if self.config.output_head == "velocity":
            return output
        # The blending runs in float32, outside autocast (under bf16 a, b and x_t would lose about a grey level,
        # and the pyramid's blur would run as a bf16 convolution), on contiguous maps (the U-Net's channels-last
        # output makes every channel slice strided, which slows the element-wise maths several times).
        return output.float().contiguous()

    def source_maps(self, x_t: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, t: torch.Tensor,
                    task_ids: torch.Tensor, gain_shifts: torch.Tensor | None = None,
                    detail_gains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and weight-head maps behind the fused estimate, for fusing more than two sources
        (``gain_shifts`` and ``detail_gains`` as in :meth:`forward`).

        Returns:
            logits (B, L, h, w): source-a weight logits, one map per pyramid level (L = 1 for the weight head);
                the network's part only: add the activity prior of :meth:`activity_scales_for` per level;
            gains (B, L - 1, h, w): the detail levels' contrast gains (none for the weight head).

        Raises:
            ValueError: for the velocity and gated heads, which have no such maps.
        """
        if self.config.output_head not in ("weight", "pyramid"):
            raise ValueError(f"A model with the {self.config.output_head!r} output head fuses pairs only.")
        output = self._raw_output(x_t, image_a, image_b, t, task_ids)
        if self.config.output_head == "weight":
            return output[:, :1], output[:, :0]
        return self._pyramid_maps(output, task_ids, gain_shifts, detail_gains)

    @torch.no_grad()
    def reset_task(self, task_id: int) -> None:
        """Return one task to its start: gate 0 (no network correction), the configured activity strengths and
        detail gains. The other tasks keep what they learned. Needs ``task_gates`` (without them the tasks share
        the output layer and none can be reset alone)."""
        if not self.config.task_gates:
            raise ValueError("Only a model with task_gates=True can return one task to its start.")
        self.task_gate[task_id] = 0.0
        if self.config.activity_scales is not None:
            self.activity_scale[task_id] = torch.tensor(self.config.activity_scales[task_id])
        if self.config.detail_gains is not None:
            self.gain_offset[task_id] = _gain_offsets(self.config.detail_gains, self.config.max_gain)[task_id]

    @torch.no_grad()
    def start_fusion(self, image_a: torch.Tensor, image_b: torch.Tensor, task_ids: torch.Tensor,
                     gain_shifts: torch.Tensor | None = None, source_means: torch.Tensor | None = None) -> torch.Tensor:
        """What every item's task fuses at its start (as after :meth:`reset_task`): the activity prior with the
        configured strengths and detail gains, no network correction. Shapes and arguments as :meth:`forward`;
        returns the fused estimate (B, 1, H, W) float32. Needs the pyramid head with ``activity_scales``."""
        if self.config.output_head != "pyramid" or self.config.activity_scales is None:
            raise ValueError("start_fusion needs the pyramid head with the activity prior (activity_scales).")
        task_ids = task_ids.long()
        levels = self.config.pyramid_levels
        device = image_a.device
        if self.config.detail_gains is not None:
            gain_input = _gain_offsets(self.config.detail_gains, self.config.max_gain).to(device)[task_ids]
            if gain_shifts is not None:
                gain_input = gain_input + gain_shifts.float().to(device)
            gains = torch.exp(math.log(self.config.max_gain) * torch.tanh(gain_input))
        else:
            gains = torch.ones(len(task_ids), levels - 1, device=device)
        scales = torch.tensor(self.config.activity_scales, dtype=torch.float32, device=device)[task_ids]
        with torch.autocast(device_type=device.type, enabled=False):
            return blend_pyramids(image_a.float(), image_b.float(), image_a.new_zeros(len(task_ids), levels, 1, 1),
                                  gains[:, :, None, None], scales, self.salient_base[task_ids],
                                  None if source_means is None else source_means.float(),
                                  self.consistency_weight[task_ids], self.consistency_epsilons[task_ids],
                                  self.config.consistency_sigma, self.sharper_base[task_ids])

    @torch.no_grad()
    def move_task_start(self, task_id: int, detail_gains: Sequence[float] | None = None,
                        detail_consistency: float | None = None) -> None:
        """Give one task a new start (its detail gains and/or the weight of the consistent detail choice) and keep
        what it learned: its gain pre-activation moves by the difference of the two starts, so the learned
        correction stays; its network output is untouched. The config is updated, so a reset or a saved copy
        starts there too. Needs the activity prior (``detail_consistency``) and ``detail_gains`` (gains)."""
        if detail_gains is not None:
            rows = self.config.detail_gains
            if rows is None:
                raise ValueError("This model has no detail_gains to move.")
            detail_gains = [float(gain) for gain in detail_gains]
            if len(detail_gains) != len(rows[task_id]) or not all(
                    1 / self.config.max_gain < gain < self.config.max_gain for gain in detail_gains):
                raise ValueError(f"Task {task_id} needs {len(rows[task_id])} detail gains strictly between "
                                 f"1 / max_gain and max_gain ({self.config.max_gain}), got {detail_gains!r}.")
            self.gain_offset[task_id] += self.gain_shift_to(task_id, detail_gains).to(self.gain_offset.dtype)
            rows = [detail_gains if index == task_id else list(row) for index, row in enumerate(rows)]
            self.register_to_config(detail_gains=rows)
            # A variant keeps its own start: its shift is relative to its class's start, which just moved.
            self._variant_gain_shifts = _variant_gain_shifts(self.config.variant_detail_gains, rows,
                                                             self.config.max_gain, len(rows))
        if detail_consistency is not None:
            weights = self.config.detail_consistency
            if weights is None or not 0 <= detail_consistency <= 1:
                raise ValueError(f"detail_consistency must be in [0, 1] on a model with the consistent detail "
                                 f"choice, got {detail_consistency!r}.")
            self.consistency_weight[task_id] = float(detail_consistency)
            self.register_to_config(detail_consistency=[float(detail_consistency) if index == task_id else weight
                                                        for index, weight in enumerate(weights)])

    def activity_scales_for(self, task_ids: torch.Tensor) -> torch.Tensor | None:
        """(B, L) float32 activity-prior strengths of each item's task (None without the prior)."""
        if self.config.activity_scales is None:
            return None
        return self.activity_scale.float()[task_ids.long()]

    def gain_shifts_for(self, task_names: Sequence[str]) -> torch.Tensor | None:
        """(B, L - 1) float32 shifts of each item's gain pre-activation that start a task variant at its own gains
        (``variant_detail_gains``; zeros for a task without them), for :meth:`forward`. None when the config
        names no variant."""
        if not self._variant_gain_shifts:
            return None
        zeros = torch.zeros(self.config.pyramid_levels - 1)
        rows = [self._variant_gain_shifts.get(get_task(name).name, zeros) for name in task_names]
        return torch.stack(rows).to(self.gain_offset.device)

    def gain_shift_to(self, task_id: int, detail_gains: Sequence[float]) -> torch.Tensor:
        """(L - 1,) float32 shift of task ``task_id``'s gain pre-activation that starts it at ``detail_gains``
        instead of its configured start, keeping its learned correction (as :meth:`gain_shifts_for` does for
        variants), for :meth:`forward`'s ``gain_shifts``."""
        shift = (_gain_offsets([list(detail_gains)], self.config.max_gain)
                 - _gain_offsets([self.config.detail_gains[task_id]], self.config.max_gain))[0]
        return shift.to(self.gain_offset.device)

    def _pyramid_maps(self, output: torch.Tensor, task_ids: torch.Tensor, gain_shifts: torch.Tensor | None = None,
                      detail_gains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pyramid head's output split into weight logits and gains bounded to [1 / max_gain, max_gain]
        (``detail_gains`` (B, L - 1), when given, instead of the head's gains)."""
        levels = self.config.pyramid_levels
        if detail_gains is not None:
            if detail_gains.shape != (output.shape[0], levels - 1):
                raise ValueError(f"detail_gains needs shape ({output.shape[0]}, {levels - 1}), one gain per item "
                                 f"and detail level, got {tuple(detail_gains.shape)}.")
            return output[:, :levels], detail_gains.float().to(output.device)[:, :, None, None]
        gain_input = output[:, levels:]
        if self.config.detail_gains is not None:
            gain_input = gain_input + self.gain_offset.float()[task_ids.long()][:, :, None, None]
        if gain_shifts is not None:
            gain_input = gain_input + gain_shifts.float()[:, :, None, None]
        return output[:, :levels], torch.exp(math.log(self.config.max_gain) * torch.tanh(gain_input))

    def forward(
        self,
        x_t: torch.Tensor,
        image_a: torch.Tensor,
        image_b: torch.Tensor,
        t: torch.Tensor,
        task_ids: torch.Tensor,
        source_means: torch.Tensor | None = None,
        gain_shifts: torch.Tensor | None = None,
        detail_gains: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity at x_t.

        Args:
            x_t: (B, 1, H, W) point on the flow.
            image_a, image_b: (B, 1, H, W) source luminances in [0, 1].
            t: (B,) float times in [0, 1].
            task_ids: (B,) long task class ids (``FusionTask.class_id``).
            source_means: optional (B, 2) mean luminances of the whole sources, for a ``"salient"`` base prior
                (:func:`fusionfm.pyramid.salience_logit`); the pipeline passes them so that tiles agree. None: the
                means of the inputs.
            gain_shifts: optional (B, L - 1) shifts of the pyramid head's gain pre-activations, the task variants'
                starts (:meth:`gain_shifts_for`); None: every item starts at its class's gains.
            detail_gains: optional (B, L - 1) contrast gains of the detail levels that replace the pyramid head's
                own (learned and start alike; 1 keeps the sources' contrast); None: the head's gains.

        Returns:
            (B, 1, H, W) velocity. H and W must be multiples of :attr:`size_multiple`.
        """
        if detail_gains is not None and self.config.output_head != "pyramid":
            raise ValueError(f"The {self.config.output_head!r} output head has no detail gains to set.")
        output = self._raw_output(x_t, image_a, image_b, t, task_ids)
        if self.config.output_head == "velocity":
            return output
        if self.config.output_head == "pyramid":
            logits, gains = self._pyramid_maps(output, task_ids, gain_shifts, detail_gains)
            with torch.autocast(device_type=output.device.type, enabled=False):
                fused = blend_pyramids(image_a.float(), image_b.float(), logits, gains,
                                       self.activity_scales_for(task_ids), self.salient_base[task_ids.long()],
                                       None if source_means is None else source_means.float(),
                                       self.consistency_weight[task_ids.long()],
                                       self.consistency_epsilons[task_ids.long()], self.config.consistency_sigma,
                                       self.sharper_base[task_ids.long()])
        else:
            weight = torch.sigmoid(output[:, :1])
            fused = weight * image_a.float() + (1 - weight) * image_b.float()
        if self.config.output_head == "gated":
            fused = fused + output[:, 1:]
        remaining = (1 - t.float()).clamp_min(self.config.min_remaining_time).view(-1, 1, 1, 1)
        return (fused - x_t.float()) / remaining


def start_prior(config: Mapping[str, Any], task_id: int, variant: str | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`fusionfm.pyramid.activity_fusion` that fuse as task ``task_id``'s untrained
    head in ``config`` (a preset of :data:`UNET_PRESETS` or a saved config with ``activity_scales``): ``scales``
    (L,), ``gains`` (L - 1,), ``salient_base``, ``detail_consistency``, ``consistency_epsilon``,
    ``consistency_sigma`` and ``sharper_base``; with ``variant`` (a task name such as ``"MIF-CT"``), that variant's
    start gains where ``variant_detail_gains`` has them."""
    scales = torch.tensor(config["activity_scales"][task_id], dtype=torch.float32)
    gain_rows, rules, consistency = (config.get(key) for key in ("detail_gains", "base_activity", "detail_consistency"))
    gains = torch.tensor(gain_rows[task_id]) if gain_rows else torch.ones(len(scales) - 1)
    if variant is not None:
        if get_task(variant).class_id != task_id:
            raise ValueError(f"Task {variant!r} is not a variant of class {task_id}.")
        variant_gains = {get_task(name).name: row for name, row in (config.get("variant_detail_gains") or {}).items()}
        gains = torch.tensor(variant_gains.get(get_task(variant).name, gains.tolist()))
    return dict(scales=scales, gains=gains,
                salient_base=bool(rules) and rules[task_id] == "salient",
                detail_consistency=float(consistency[task_id]) if consistency else 0.0,
                consistency_epsilon=_per_task(config.get("consistency_epsilon", ACTIVITY_EPSILON),
                                              len(config["activity_scales"]))[task_id],
                consistency_sigma=float(config.get("consistency_sigma", CONSISTENT_SIGMA)),
                sharper_base=bool(rules) and rules[task_id] == "sharper")


def build_unet(preset: str = "default", **overrides: Any) -> FusionUNet:
    """A freshly initialised :class:`FusionUNet` from a named preset, with config overrides.

    Presets: ``"tiny"`` (tests), ``"default"`` (the shipped model), ``"patch2"`` (the same on a 2x2 pixel unshuffle,
    the session-11 model), ``"pyramid"`` (no activity prior), ``"weight"`` (the first shipped model's per-pixel
    weight head), ``"large"``.
    """
    if preset not in UNET_PRESETS:
        raise ValueError(f"Unknown U-Net preset {preset!r}. Known presets: {', '.join(UNET_PRESETS)}.")
    return FusionUNet(**{**UNET_PRESETS[preset], **overrides})
