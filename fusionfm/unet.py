"""The velocity network: a diffusers ``UNet2DModel`` on [x_t, a, b] with the task as class embedding, whose output is a
band-wise blend of the two sources on top of an activity prior (docs/design.md, "The network").

``FusionUNet`` packs each block of pixels (4x4 in the default preset) into channels (pixel unshuffle) before the
U-Net, so the U-Net runs on a sixteenth of the pixels, and unpacks its output maps after it (a lossless
rearrangement). Its output, per pixel: a source-a weight logit for each level of an L-level Laplacian pyramid and a
contrast gain in [1 / max_gain, max_gain] for each detail level. The fused estimate x1_hat is the collapsed blended
pyramid (:func:`fusionfm.pyramid.blend_pyramids`), and the velocity is the one that reaches it from x_t,
(x1_hat - x_t) / (1 - t), so one Euler step from t = 0 lands on it.

Each level's logit is the network's correction to an **activity prior** of a learned strength per task and level: a
softened max-abs choice of the detail coefficients (:func:`fusionfm.pyramid.activity_logit`, partly from one
consistent map of edge strength, :func:`fusionfm.pyramid.consistent_detail_logit`) and a brighter, more salient or
sharper source for the base (:data:`fusionfm.pyramid.BASE_ACTIVITIES`). Per-task gates on the network's output start
at 0, so every task starts as its activity prior with its start gains (:meth:`FusionUNet.start_fusion`) and leaves it
only as far as its own training asks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .pyramid import ACTIVITY_EPSILON, BASE_ACTIVITIES, CONSISTENT_SIGMA, blend_pyramids
from .tasks import NUM_TASK_CLASSES, get_task


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


UNET_PRESETS: dict[str, dict[str, Any]] = {
    # The shipped model: a 4x4 pixel unshuffle, widths 16-32-64-128 at 1/4 to 1/32 of the image, purely convolutional,
    # a 5-level pyramid. The activity prior of each task (rows IVF, MIF, MEF, MFF): detail strengths 128, 64, 16 and
    # 16; base from the more salient source (IVF, strength 4), the brighter one (MIF 16, MEF 2) or the sharper one
    # (MFF, 32); the detail choice 0.95, 0.9, 0 and 1 from one consistent map (smoothed over 5 pixels, even where
    # both sources are flat below epsilon 0.1, 0.1, 0.03, 0.03). Every start gain is 1: gains are learned.
    "default": dict(
        patch_size=4, block_out_channels=(16, 32, 64, 128), layers_per_block=1, norm_num_groups=8,
        mid_block_attention=False, pyramid_levels=5, max_gain=2.0, task_gates=True,
        activity_scales=[[detail] * 4 + [base] for detail, base in ((128.0, 4.0), (64.0, 16.0), (16.0, 2.0),
                                                                    (16.0, 32.0))],
        base_activity=["salient", "brighter", "brighter", "sharper"], detail_consistency=[0.95, 0.9, 0.0, 1.0],
        consistency_epsilon=[0.1, 0.1, 0.03, 0.03], consistency_sigma=5.0, detail_gains=[[1.0] * 4] * 4),
    # For tests: the same kind of model, a few thousand parameters, milliseconds per call.
    "tiny": dict(
        patch_size=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, mid_block_attention=False,
        pyramid_levels=3, max_gain=2.0, task_gates=True, activity_scales=[[16.0, 16.0, 4.0]] * 4,
        detail_gains=[[1.0, 1.0]] * 4),
}


class FusionUNet(ModelMixin, ConfigMixin):
    """Predicts the flow velocity v(x_t, t | a, b, task) through a band-wise blend of a and b (module docstring).

    The defaults are the ``"default"`` preset's architecture without its per-task prior (``build_unet`` gives the
    preset).

    Args:
        patch_size: pixels per side packed into channels before the U-Net (1 = none).
        block_out_channels: widths of the U-Net levels.
        layers_per_block: ResNet blocks per level.
        norm_num_groups: GroupNorm groups (must divide every width).
        mid_block_attention: self-attention in the U-Net's lowest level.
        num_tasks: size of the task class embedding.
        time_scale: t in [0, 1] is fed to the sinusoidal time embedding as t * time_scale.
        min_remaining_time: the velocity divides by max(1 - t, this), so times near 1 stay bounded.
        pyramid_levels: Laplacian levels L of the blend.
        max_gain: the detail gains lie in [1 / max_gain, max_gain].
        activity_scales: per task and level, the starting strength of the activity prior (learned with the network);
            None: the network's logits alone.
        base_activity: (with ``activity_scales``) per task, how the base band's prior compares the sources:
            ``"brighter"``, ``"salient"`` or ``"sharper"`` (:data:`fusionfm.pyramid.BASE_ACTIVITIES`); None: brighter
            for every task. Stacks of frames always compare brightness.
        detail_consistency: (with ``activity_scales``) per task, the weight in [0, 1] of one choice for all detail
            levels (:func:`fusionfm.pyramid.consistent_detail_logit`) against each band's own; None: 0.
        consistency_epsilon: the ``epsilon`` of that consistent map (luminance units), one for every task or one per
            task: above the finest bands' noise, it leaves the choice even where both sources are flat.
        consistency_sigma: the Gaussian smoothing (finest-band pixels) of that map's magnitudes.
        detail_gains: per task and detail level, the gain at a network output of 0 (1 keeps the sources' contrast),
            held as a learned offset before the gain's tanh; None: every gain starts at 1.
        variant_detail_gains: (with ``detail_gains``) start gains of task variants that share a class id (keys such
            as ``"MIF-CT"``), one per detail level: the variant's gain pre-activation is its class's shifted by the
            difference of the two rows' offsets (:meth:`gain_shifts_for`).
        task_gates: multiply the output maps by learned per-task, per-channel gates that start at 0 (as ControlNet's
            zero convolutions), so every task starts at its activity prior and its outputs move only as far as its
            own data asks, not with the weights shared with the other tasks.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        patch_size: int = 4,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        mid_block_attention: bool = False,
        num_tasks: int = NUM_TASK_CLASSES,
        time_scale: float = 1000.0,
        min_remaining_time: float = 0.05,
        pyramid_levels: int = 5,
        max_gain: float = 2.0,
        activity_scales: list[list[float]] | None = None,
        task_gates: bool = True,
        detail_gains: list[list[float]] | None = None,
        base_activity: list[str] | None = None,
        detail_consistency: list[float] | None = None,
        consistency_epsilon: float | list[float] = ACTIVITY_EPSILON,
        consistency_sigma: float = CONSISTENT_SIGMA,
        variant_detail_gains: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        if activity_scales is not None:
            if len(activity_scales) != num_tasks or any(len(row) != pyramid_levels for row in activity_scales):
                raise ValueError(f"activity_scales needs one row of {pyramid_levels} strengths per task "
                                 f"({num_tasks} rows).")
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
            if len(detail_gains) != num_tasks or any(len(row) != pyramid_levels - 1 for row in detail_gains):
                raise ValueError(f"detail_gains needs one row of {pyramid_levels - 1} gains per task "
                                 f"({num_tasks} rows).")
            if any(not 1 / max_gain < gain < max_gain for row in detail_gains for gain in row):
                raise ValueError(f"detail_gains must lie strictly between 1 / max_gain and max_gain ({max_gain}).")
            self.gain_offset = torch.nn.Parameter(_gain_offsets(detail_gains, max_gain))
        self._variant_gain_shifts = _variant_gain_shifts(variant_detail_gains, detail_gains, max_gain, num_tasks)
        levels = len(block_out_channels)
        packed = patch_size * patch_size
        self.unet = UNet2DModel(
            in_channels=3 * packed,
            out_channels=self.output_channels * packed,
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
            self.task_gate = torch.nn.Parameter(torch.zeros(num_tasks, self.output_channels))
        else:
            # Start as the activity prior itself (logits 0, gains 1): training learns corrections to it.
            torch.nn.init.zeros_(self.unet.conv_out.weight)
            torch.nn.init.zeros_(self.unet.conv_out.bias)

    @property
    def output_channels(self) -> int:
        """Output maps per pixel: a weight logit per pyramid level and a gain per detail level."""
        return 2 * self.config.pyramid_levels - 1

    @property
    def size_multiple(self) -> int:
        """Heights and widths must be multiples of this (pad with the image processor)."""
        return self.config.patch_size * 2 ** (len(self.config.block_out_channels) - 1)

    def _raw_output(self, x_t: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, t: torch.Tensor,
                    task_ids: torch.Tensor) -> torch.Tensor:
        """The U-Net's output maps (B, 2L - 1, H, W), float32 and contiguous."""
        patch = self.config.patch_size
        if self.config.task_gates and not torch.is_grad_enabled() and not self.task_gate[task_ids.long()].any():
            # Every item's task is at its start (gates 0): the U-Net's output would be multiplied by 0, so skip it.
            # (Not while training: the gates' gradient needs that output.) Maps of one pixel broadcast over every
            # pyramid level; full-size maps of zeros would cost a third of such a call.
            return x_t.new_zeros(x_t.shape[0], self.output_channels, 1, 1, dtype=torch.float32)
        inputs = torch.cat([x_t, image_a, image_b], dim=1)
        if patch > 1:
            inputs = F.pixel_unshuffle(inputs, patch)
        timesteps = t.to(dtype=torch.float32) * self.config.time_scale
        output = self.unet(inputs, timesteps, class_labels=task_ids.long()).sample
        if patch > 1:
            output = F.pixel_shuffle(output, patch)
        if self.config.task_gates:
            output = output * self.task_gate.to(output.dtype)[task_ids.long()][:, :, None, None]
        # The blending runs in float32, outside autocast (under bf16 a, b and x_t would lose about a grey level,
        # and the pyramid's blur would run as a bf16 convolution), on contiguous maps (the U-Net's channels-last
        # output makes every channel slice strided, which slows the element-wise maths several times).
        return output.float().contiguous()

    def source_maps(self, x_t: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, t: torch.Tensor,
                    task_ids: torch.Tensor, gain_shifts: torch.Tensor | None = None,
                    detail_gains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The maps behind the fused estimate, for fusing more than two sources (arguments as :meth:`forward`).

        Returns:
            logits (B, L, h, w): source-a weight logits, one map per pyramid level; the network's part only (add the
                activity prior of :meth:`activity_scales_for` per level);
            gains (B, L - 1, h, w): the detail levels' contrast gains.
        """
        output = self._raw_output(x_t, image_a, image_b, t, task_ids)
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
        returns the fused estimate (B, 1, H, W) float32. Needs ``activity_scales``."""
        if self.config.activity_scales is None:
            raise ValueError("start_fusion needs the activity prior (activity_scales).")
        task_ids = task_ids.long()
        levels = self.config.pyramid_levels
        device = image_a.device
        if self.config.detail_gains is not None:
            gain_input = _gain_offsets(self.config.detail_gains, self.config.max_gain).to(device)[task_ids]
            if gain_shifts is not None:
                gain_input = gain_input + gain_shifts.float().to(device)
            gains = self._bounded_gains(gain_input)
        else:
            gains = torch.ones(len(task_ids), levels - 1, device=device)
        scales = torch.tensor(self.config.activity_scales, dtype=torch.float32, device=device)[task_ids]
        return self._blend(image_a, image_b, image_a.new_zeros(len(task_ids), levels, 1, 1), gains[:, :, None, None],
                           scales, task_ids, source_means)

    def _bounded_gains(self, gain_input: torch.Tensor) -> torch.Tensor:
        """Gain pre-activations to contrast gains in [1 / max_gain, max_gain] (0 -> 1)."""
        return torch.exp(math.log(self.config.max_gain) * torch.tanh(gain_input))

    def _blend(self, image_a: torch.Tensor, image_b: torch.Tensor, logits: torch.Tensor, gains: torch.Tensor,
               scales: torch.Tensor | None, task_ids: torch.Tensor, source_means: torch.Tensor | None) -> torch.Tensor:
        """The collapsed band-wise blend of the sources (B, 1, H, W) for these weight logits and gains, with each
        item's task's activity prior, in float32 (:func:`fusionfm.pyramid.blend_pyramids`)."""
        task_ids = task_ids.long()
        with torch.autocast(device_type=image_a.device.type, enabled=False):
            return blend_pyramids(image_a.float(), image_b.float(), logits, gains, scales, self.salient_base[task_ids],
                                  None if source_means is None else source_means.float(),
                                  self.consistency_weight[task_ids], self.consistency_epsilons[task_ids],
                                  self.config.consistency_sigma, self.sharper_base[task_ids])

    TASK_PARAMETERS = ("task_gate", "activity_scale", "gain_offset", "unet.class_embedding.weight")
    """Parameters with one row per task: a task's row changes only its own fusions."""

    def train_only_tasks(self, task_ids: Sequence[int]) -> list[torch.nn.Parameter]:
        """Freeze everything but the rows of ``task_ids`` in :data:`TASK_PARAMETERS` (their gradient is masked to
        those rows), so training changes no other task's fusion; returns the parameters left to train (give them to
        an optimizer without weight decay, which would move the other rows)."""
        named = dict(self.named_parameters())
        trainable = []
        for name, parameter in named.items():
            parameter.requires_grad_(name in self.TASK_PARAMETERS)
            if name in self.TASK_PARAMETERS:
                mask = torch.zeros(parameter.shape[0], *([1] * (parameter.ndim - 1)), device=parameter.device)
                mask[list(task_ids)] = 1.0
                parameter.register_hook(lambda grad, mask=mask: grad * mask.to(grad.dtype))
                trainable.append(parameter)
        return trainable

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

    def _pyramid_maps(self, output: torch.Tensor, task_ids: torch.Tensor, gain_shifts: torch.Tensor | None = None,
                      detail_gains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The output split into weight logits and gains bounded to [1 / max_gain, max_gain] (``detail_gains``
        (B, L - 1), when given, instead of the network's gains)."""
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
        return output[:, :levels], self._bounded_gains(gain_input)

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
            gain_shifts: optional (B, L - 1) shifts of the gain pre-activations, the task variants' starts
                (:meth:`gain_shifts_for`); None: every item starts at its class's gains.
            detail_gains: optional (B, L - 1) contrast gains of the detail levels that replace the network's own
                (1 keeps the sources' contrast); None: the network's gains.

        Returns:
            (B, 1, H, W) velocity. H and W must be multiples of :attr:`size_multiple`.
        """
        output = self._raw_output(x_t, image_a, image_b, t, task_ids)
        logits, gains = self._pyramid_maps(output, task_ids, gain_shifts, detail_gains)
        fused = self._blend(image_a, image_b, logits, gains, self.activity_scales_for(task_ids), task_ids, source_means)
        remaining = (1 - t.float()).clamp_min(self.config.min_remaining_time).view(-1, 1, 1, 1)
        return (fused - x_t.float()) / remaining


def build_unet(preset: str = "default", **overrides: Any) -> FusionUNet:
    """A freshly initialised :class:`FusionUNet` from a named preset (``"default"``: the shipped model;
    ``"tiny"``: the same kind for tests), with config overrides."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"Unknown U-Net preset {preset!r}. Known presets: {', '.join(UNET_PRESETS)}.")
    return FusionUNet(**{**UNET_PRESETS[preset], **overrides})
