"""``actionclip export``: a model as an export directory that ONNX Runtime runs (:mod:`actionclip.apps.onnx_runtime`)
and that ``actionclip predict --checkpoint`` takes like any checkpoint.

``export.json`` says what the graphs take and how they score: input size, mean and std, frames (and whether another
count works), the templates, the test arithmetic (normalised video embedding against normalised text features at
ActionCLIP's fixed test scale of 100, softmax per template, mean over templates; X-CLIP: its prompt graph's logits),
the graph files, the default precision, how many matmuls the int8 video graph runs in int8 and in fp32, and the
weights' digest.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from open_clip.tokenizer import default_bpe
from torch import nn

from actionclip.apps.model_options import add_build_options, add_model_source, warn_if_random
from actionclip.apps.onnx_runtime import EXPORT_CONFIG, EXPORT_FORMAT, ONNX_PRECISIONS, ExportedModel
from actionclip.apps.predict import model_image_size, model_normalization
from actionclip.data.transforms import NORMALIZATIONS
from actionclip.models.actionclip import TEST_LOGIT_SCALE
from actionclip.models.onnx_export import export_graphs
from actionclip.models.weight_files import tensor_digest
from actionclip.prompts import resolve_templates

LABEL_FEATURES = "label_features.npy"


def weights_digest(model: nn.Module) -> str:
    return tensor_digest(model.state_dict())


def export_model(model: nn.Module, output: str | Path, precision: str = "fp32", frames: int | None = None,
                 labels: Sequence[str] | None = None, templates=None) -> Path:
    """Export ``model`` (an fp32 ActionCLIP or X-CLIP, not prepared for inference) into ``output``: the fp32 graphs,
    with ``precision="int8"`` also the int8 video graph (then the default), and with ``labels`` their text features
    for ``templates`` (None: the model's default templates). Returns ``output``."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"export precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    if getattr(model, "prepared_for_inference", False):
        raise ValueError("export the model as trained or loaded, not after prepare_for_inference")
    output = Path(output)
    digest = weights_digest(model)
    graphs = export_graphs(model, output, frames)
    size = model_image_size(model)
    int8 = None
    if precision == "int8":
        from actionclip.models.onnx_int8 import quantize_video_graph  # needs the onnx package, an optional extra

        int8 = quantize_video_graph(output, graphs["num_frames"], size)
        graphs["files"]["video_int8"] = int8.pop("file")
    shutil.copyfile(default_bpe(), output / Path(default_bpe()).name)
    normalization = model_normalization(model)  # what `actionclip predict` normalises with
    mean, std = NORMALIZATIONS[normalization]
    xclip = model.config.arch == "xclip"
    config = {
        "format": EXPORT_FORMAT, "version": 1, "arch": model.config.arch, "model_name": model.config.model_name,
        "visual_prompt": None if xclip else model.config.visual_prompt, "embed_dim": model.config.clip["embed_dim"],
        "image_size": size, "normalization": normalization,
        "mean": list(mean), "std": list(std), **{k: v for k, v in graphs.items() if k != "files"},
        "tokenizer": Path(default_bpe()).name, "templates": resolve_templates(model.default_templates),
        "test": {"video_features": "L2-normalised output of video.onnx",
                 "text_features": "un-normalised (X-CLIP adds its prompts first)" if xclip else "L2-normalised",
                 "logit_scale": None if xclip else model.config.test_logit_scale or TEST_LOGIT_SCALE,
                 "logits": "prompts.onnx" if xclip else "logit_scale x cosine similarity",
                 "templates": "softmax over labels per template, mean over templates"},
        "files": graphs["files"], "precision": precision, "int8": int8, "weights_digest": digest, "label_features": None,
    }
    (output / EXPORT_CONFIG).write_text(json.dumps(config, indent=2))
    if labels:
        labels = list(labels)
        features = ExportedModel(output).class_text_features(labels, templates)
        np.save(output / LABEL_FEATURES, features.astype(np.float32), allow_pickle=False)
        config["label_features"] = {"file": LABEL_FEATURES, "labels": labels, "templates": resolve_templates(
            model.default_templates if templates is None else templates)}
        (output / EXPORT_CONFIG).write_text(json.dumps(config, indent=2))
    return output


def add_export_command(sub) -> None:
    export = sub.add_parser("export", help="export a model to ONNX (video and text encoders) for ONNX Runtime")
    add_model_source(export)
    add_build_options(export)
    export.add_argument("--output", required=True, help="the export directory")
    export.add_argument("--precision", default="fp32", choices=ONNX_PRECISIONS,
                        help="int8: also a video graph whose per-token matmuls run in int8, the default at run time (default: fp32)")
    export.add_argument("--frames", type=int, help="frames per clip (default: the model's; some models take only theirs)")
    labels = export.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="comma-separated labels whose text features are stored (no text tower needed for them)")
    labels.add_argument("--labels-file", help="a text file with one label per line, as --labels")
    export.add_argument("--templates", help="templates of the stored label features (default: the model's)")
    export.set_defaults(handler=_export)


def _export(args) -> int:
    from actionclip.apps.predict import parse_labels, read_labels, read_model

    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    labels = read_labels(args.labels_file) if args.labels_file else parse_labels(args.labels) if args.labels else None
    warn_if_random(args)
    model = read_model(args.checkpoint, args.model, args.pretrained, visual_prompt=args.visual_prompt,
                       num_frames=args.frames or 8, arch=args.arch)
    output = export_model(model, args.output, args.precision, args.frames, labels, args.templates)
    print(f"exported to {output}", file=sys.stderr)
    return 0
