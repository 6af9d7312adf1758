"""actionclip: video action recognition as video-text matching with CLIP.

The public names are imported on first use (PEP 562), so that ``actionclip.apps.onnx_runtime`` runs exported
models where torch is not installed.
"""
from importlib import import_module

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    "losses": "actionclip",
    "predict": "actionclip.apps.predict",
    "embed": "actionclip.apps.embed",
    "search": "actionclip.apps.search",
    **dict.fromkeys(("VISUAL_PROMPTS", "XCLIP", "ActionCLIP", "ActionCLIPConfig", "CheckpointError", "UnimodalClassifier",
                     "register_model_config"), "actionclip.models"),
    **dict.fromkeys(("from_official_checkpoint", "load", "save"), "actionclip.models.checkpoints"),
    **dict.fromkeys(("build_model", "create_model"), "actionclip.models.factory"),
    **dict.fromkeys(("from_hf_xclip", "from_videox_checkpoint", "read_videox_checkpoint"), "actionclip.models.xclip_checkpoints"),
    "from_mmaction2_checkpoint": "actionclip.models.mmaction2_checkpoints",
    "from_vificlip_checkpoint": "actionclip.models.vificlip_checkpoints",
    **dict.fromkeys(("ACTIONCLIP_TEMPLATES", "clean_class_name"), "actionclip.prompts"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'actionclip' has no attribute {name!r}")
    module = _PUBLIC[name]
    value = import_module(f"actionclip.{name}") if module == "actionclip" else getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
