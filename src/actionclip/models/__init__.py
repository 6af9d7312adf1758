"""The models (ActionCLIP, its unimodal baseline, X-CLIP) on open_clip backbones, and the readers of their weights."""

from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig, UnimodalClassifier, ensemble_probabilities
from actionclip.models.backbone import register_model_config
from actionclip.models.temporal import VISUAL_PROMPTS
from actionclip.models.video import VideoEncoder
from actionclip.models.xclip import XCLIP
from actionclip.weights.errors import CheckpointError

__all__ = [
    "ActionCLIP",
    "ActionCLIPConfig",
    "CheckpointError",
    "UnimodalClassifier",
    "VISUAL_PROMPTS",
    "VideoEncoder",
    "XCLIP",
    "ensemble_probabilities",
    "register_model_config",
]
