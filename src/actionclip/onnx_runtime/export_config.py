"""An export directory's ``export.json``, read as untrusted (:mod:`actionclip.host.records`): a folder may be copied,
edited or mixed by hand, so every field is checked before it names a file or sizes an allocation. Every file it
names is a plain name inside the directory, and the sizes are bounded, so ``image_size: 100000`` (a 417 GB frame
buffer) or ``"tokenizer": "/etc/passwd"`` is one line. No torch.

Version 2 exports stamp each graph with the digest of the weights it was exported from (ONNX metadata
``actionclip.weights_digest``), which must be the ``weights_digest`` of ``export.json``: a graph of another export
copied in, or left by an export interrupted before exports were staged, is refused when it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from actionclip.host.records import (
    FLAG,
    OBJECT,
    PLAIN_NAME,
    POSITIVE,
    TEXT,
    TEXTS,
    check_fields,
    integer,
    numbers,
    one_of,
    optional,
    read_json,
)

EXPORT_CONFIG = "export.json"
EXPORT_FORMAT = "actionclip-onnx"
EXPORT_VERSION = 2
WEIGHTS_STAMP = "actionclip.weights_digest"
ONNX_PRECISIONS = ("fp32", "int8")
# Far above any CLIP (224-448 pixels, 8-32 frames, 77 tokens, 512-1024 wide); beyond them a value is a mistake.
MAX_IMAGE_SIZE, MAX_FRAMES, MAX_CONTEXT, MAX_DIM = 1024, 1024, 1024, 1 << 16

_RULES = {
    "version": integer(1, EXPORT_VERSION),
    "arch": TEXT,
    "visual_prompt": optional(TEXT),
    "embed_dim": integer(1, MAX_DIM),
    "image_size": integer(1, MAX_IMAGE_SIZE),
    "normalization": TEXT,
    "mean": numbers(3),
    "std": numbers(3, low=0),
    "num_frames": integer(1, MAX_FRAMES),
    "dynamic_frames": FLAG,
    "fixed_frames_reason": optional(TEXT),
    "max_frames": integer(1, MAX_FRAMES),
    "context_length": integer(2, MAX_CONTEXT),
    "tokenizer": PLAIN_NAME,
    "templates": TEXTS,
    "test": OBJECT,
    "files": OBJECT,
    "precision": one_of(*ONNX_PRECISIONS),
    "weights_digest": TEXT,
    "label_features": optional(OBJECT),
}
_LABEL_FEATURES = {"file": PLAIN_NAME, "labels": TEXTS, "templates": TEXTS}


def is_export_dir(path: str | os.PathLike | None) -> bool:
    if path is None:
        return False
    try:
        return json.loads((Path(path) / EXPORT_CONFIG).read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def read_export_config(directory: str | os.PathLike) -> dict:
    """``export.json`` of ``directory``, each field checked; a ValueError naming the first that is wrong."""
    path = Path(directory) / EXPORT_CONFIG
    try:  # read once: what is_export_dir refuses is "not an export directory" here too
        config = read_json(path)
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{directory}: not an export directory (no {EXPORT_CONFIG} written by `actionclip export`)")
    check_fields(path, config, _RULES)
    check_fields(path, config["files"], {"video": PLAIN_NAME, "text": PLAIN_NAME, **dict.fromkeys(config["files"], PLAIN_NAME)}, "files.")
    # X-CLIP scores with its prompt graph, without a scale
    check_fields(path, config["test"], {"logit_scale": optional(POSITIVE) if config["arch"] == "xclip" else POSITIVE}, "test.")
    if config["label_features"] is not None:
        check_fields(path, config["label_features"], _LABEL_FEATURES, "label_features.")
    if config["num_frames"] > config["max_frames"]:
        raise ValueError(f"{path}: num_frames ({config['num_frames']}) is more than max_frames ({config['max_frames']})")
    return config
