"""A model as an export directory that ONNX Runtime runs (:mod:`actionclip.onnx_runtime.runtime`)
and that ``actionclip predict --checkpoint`` takes like any checkpoint.

``export.json`` says what the graphs take and how they score: input size, mean and std, frames (and whether another
count works), the templates, the test arithmetic (normalised video embedding against normalised text features at
ActionCLIP's fixed test scale of 100, softmax per template, mean over templates; X-CLIP: its prompt graph's logits),
the graph files, the default precision, how many matmuls the int8 video graph runs in int8 and in fp32, and the
weights' digest, with which every graph is stamped (checked when it is loaded).

An export is written into a staging folder beside its target and renamed into place, so an export directory is
always one export whole, the old or the new, never a mix; the target must be new, empty, or an export holding only
what an export writes, so that a user's files are never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from open_clip.tokenizer import default_bpe
from torch import nn

from actionclip.data.transforms import NORMALIZATIONS
from actionclip.export.graphs import export_graphs
from actionclip.host.files import fsync_directory, temporary_path
from actionclip.models.actionclip import TEST_LOGIT_SCALE
from actionclip.models.inputs import model_image_size, model_normalization
from actionclip.onnx_runtime.export_config import (
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ONNX_PRECISIONS,
    WEIGHTS_STAMP,
    read_export_config,
)
from actionclip.onnx_runtime.runtime import ExportedModel
from actionclip.prompts import resolve_templates
from actionclip.weights.readers import tensor_digest

LABEL_FEATURES = "label_features.npy"


def weights_digest(model: nn.Module) -> str:
    return tensor_digest(model.state_dict())


def _written_by_an_export(directory: Path) -> set[str] | None:
    """The files an export in ``directory`` wrote, or None when it holds no export."""
    try:
        config = read_export_config(directory)
    except ValueError:
        return None
    features = config["label_features"]
    return {EXPORT_CONFIG, config["tokenizer"], *config["files"].values(), *([features["file"]] if features else [])}


def check_export_target(output: str | Path) -> None:
    """ValueError unless ``output`` is new, empty, or an export directory holding only what its export wrote (which
    a new export then replaces)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output}: not a folder; export into a new or empty folder")
    names = {p.name for p in output.iterdir()} if output.is_dir() else set()
    if not names:
        return
    ours = _written_by_an_export(output)
    if ours is None:
        raise ValueError(f"{output}: not empty and not an export directory (no {EXPORT_CONFIG}); export into a new or empty folder")
    if names - ours:
        raise ValueError(f"{output}: holds {sorted(names - ours)[0]}, which no export wrote; export into a new or empty folder")


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename ``staging`` to ``output``; an export there is moved aside first and deleted after."""
    if not output.exists():
        os.replace(staging, output)
    else:
        aside = temporary_path(output, ".old")
        os.replace(output, aside)
        try:
            os.replace(staging, output)
        except OSError:
            os.replace(aside, output)
            raise
        shutil.rmtree(aside)
    fsync_directory(output.parent)


def export_model(
    model: nn.Module,
    output: str | Path,
    precision: str = "fp32",
    frames: int | None = None,
    labels: Sequence[str] | None = None,
    templates=None,
) -> Path:
    """Export ``model`` (an fp32 ActionCLIP or X-CLIP, not prepared for inference) into ``output`` (new, empty, or
    an export directory, which it replaces): the fp32 graphs, with ``precision="int8"`` also the int8 video graph
    (then the default), and with ``labels`` their text features for ``templates`` (None: the model's default
    templates). Returns ``output``."""
    output = Path(output)
    check_export_target(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(output, ".staging")
    try:
        write_export(model, staging, precision, frames, labels, templates)
        _move_into_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def write_export(
    model: nn.Module, output: Path, precision: str = "fp32", frames: int | None = None, labels: Sequence[str] | None = None, templates=None
) -> None:
    """Write the export of ``model`` into the new or empty folder ``output`` (:func:`export_model` stages it)."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"export precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    if getattr(model, "prepared_for_inference", False):
        raise ValueError("export the model as trained or loaded, not after prepare_for_inference")
    digest = weights_digest(model)
    graphs = export_graphs(model, output, frames, {WEIGHTS_STAMP: digest})
    size = model_image_size(model)
    int8 = None
    if precision == "int8":
        from actionclip.export.int8 import quantize_video_graph  # needs the onnx package, an optional extra

        int8 = quantize_video_graph(output, graphs["num_frames"], size)
        graphs["files"]["video_int8"] = int8.pop("file")
    shutil.copyfile(default_bpe(), output / Path(default_bpe()).name)
    normalization = model_normalization(model)  # what `actionclip predict` normalises with
    mean, std = NORMALIZATIONS[normalization]
    xclip = model.video_specific_text  # X-CLIP: text features from its prompt graph
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": model.config.arch,
        "model_name": model.config.model_name,
        "visual_prompt": model.config.visual_prompt if model.uses_visual_prompt else None,
        "embed_dim": model.config.clip["embed_dim"],
        "image_size": size,
        "normalization": normalization,
        "mean": list(mean),
        "std": list(std),
        **{k: v for k, v in graphs.items() if k != "files"},
        "tokenizer": Path(default_bpe()).name,
        "templates": resolve_templates(model.default_templates),
        "test": {
            "video_features": "L2-normalised output of video.onnx",
            "text_features": "un-normalised (X-CLIP adds its prompts first)" if xclip else "L2-normalised",
            "logit_scale": None if xclip else model.config.test_logit_scale or TEST_LOGIT_SCALE,
            "logits": "prompts.onnx" if xclip else "logit_scale x cosine similarity",
            "templates": "softmax over labels per template, mean over templates",
        },
        "files": graphs["files"],
        "precision": precision,
        "int8": int8,
        "weights_digest": digest,
        "label_features": None,
    }
    (output / EXPORT_CONFIG).write_text(json.dumps(config, indent=2))
    if labels:
        labels = list(labels)
        features = ExportedModel(output).class_text_features(labels, templates)
        np.save(output / LABEL_FEATURES, features.astype(np.float32), allow_pickle=False)
        config["label_features"] = {
            "file": LABEL_FEATURES,
            "labels": labels,
            "templates": resolve_templates(model.default_templates if templates is None else templates),
        }
        (output / EXPORT_CONFIG).write_text(json.dumps(config, indent=2))
