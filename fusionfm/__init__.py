"""FusionFM: one-step flow-matching image fusion (infrared + visible, medical, multi-exposure, multi-focus)."""

from .alignment import MisregistrationWarning
from .image_processor import FusionImageProcessor, FusionInputWarning, load_image
from .pipeline_fusionfm import FusionFMPipeline, FusionFMPipelineOutput
from .scheduler import FlowMatchFusionScheduler
from .tasks import TASKS, FusionTask, get_task
from .unet import UNET_PRESETS, FusionUNet, build_unet

__version__ = "0.1.0"

__all__ = [
    "TASKS",
    "UNET_PRESETS",
    "FlowMatchFusionScheduler",
    "FusionFMPipeline",
    "FusionFMPipelineOutput",
    "FusionImageProcessor",
    "FusionInputWarning",
    "FusionTask",
    "FusionUNet",
    "MisregistrationWarning",
    "build_unet",
    "get_task",
    "load_image",
]
