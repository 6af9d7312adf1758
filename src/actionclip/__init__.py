"""actionclip: video action recognition as video-text matching with CLIP.

The public names are imported on first use (PEP 562), so that ``actionclip.onnx_runtime.runtime`` runs exported
models where torch is not installed.
"""

from importlib import import_module

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    "losses": "actionclip",
    "predict": "actionclip.inference.predict",
    "embed": "actionclip.inference.embed",
    "search": "actionclip.inference.search",
    **dict.fromkeys(
        ("VISUAL_PROMPTS", "XCLIP", "ActionCLIP", "ActionCLIPConfig", "CheckpointError", "UnimodalClassifier", "register_model_config"),
        "actionclip.models",
    ),
    **dict.fromkeys(("load", "save"), "actionclip.checkpoints.ours"),
    "from_official_checkpoint": "actionclip.checkpoints.official",
    "build_model": "actionclip.models.build",
    "create_model": "actionclip.checkpoints.sources",
    **dict.fromkeys(("from_hf_xclip", "from_videox_checkpoint", "read_videox_checkpoint"), "actionclip.checkpoints.xclip"),
    "from_mmaction2_checkpoint": "actionclip.checkpoints.mmaction2",
    "from_vificlip_checkpoint": "actionclip.checkpoints.vificlip",
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
