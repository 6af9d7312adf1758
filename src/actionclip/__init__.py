"""actionclip: video action recognition as video-text matching with CLIP."""
from actionclip import losses
from actionclip.apps.embed import embed
from actionclip.apps.predict import predict
from actionclip.apps.search import search
from actionclip.models import (
    VISUAL_PROMPTS,
    XCLIP,
    ActionCLIP,
    ActionCLIPConfig,
    CheckpointError,
    UnimodalClassifier,
    register_model_config,
)
from actionclip.models.checkpoints import from_official_checkpoint, load, save
from actionclip.models.factory import build_model, create_model
from actionclip.models.mmaction2_checkpoints import from_mmaction2_checkpoint
from actionclip.models.vificlip_checkpoints import from_vificlip_checkpoint
from actionclip.models.xclip_checkpoints import from_hf_xclip, from_videox_checkpoint, read_videox_checkpoint
from actionclip.prompts import ACTIONCLIP_TEMPLATES, clean_class_name

__version__ = "0.1.0"

__all__ = [
    "ACTIONCLIP_TEMPLATES", "ActionCLIP", "ActionCLIPConfig", "CheckpointError", "UnimodalClassifier", "VISUAL_PROMPTS",
    "XCLIP", "build_model", "clean_class_name", "create_model", "embed", "from_hf_xclip", "from_mmaction2_checkpoint",
    "from_official_checkpoint", "from_vificlip_checkpoint", "from_videox_checkpoint", "load", "losses", "predict",
    "read_videox_checkpoint", "register_model_config", "save", "search",
]
