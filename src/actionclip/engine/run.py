"""From a config to a model, datasets and a run: what ``actionclip train`` and ``actionclip eval`` do."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from actionclip import checkpoints
from actionclip.config import Config, ModelConfig
from actionclip.engine import distributed
from actionclip.engine.evaluate import predict_dataset, summarize, write_report
from actionclip.engine.train import Trainer, autocast_dtype
from actionclip.factory import create_model


def model_from_config(config: ModelConfig, num_classes: int | None = None) -> torch.nn.Module:
    if config.checkpoint:
        return checkpoints.load_any(config.checkpoint, config.visual_prompt, config.num_frames)
    return create_model(
        config.name,
        config.pretrained,
        config.visual_prompt,
        config.num_frames,
        arch=config.arch,
        num_classes=num_classes if config.arch == "unimodal" else None,
        quick_gelu=config.quick_gelu,
        init_vision=config.init_vision,
        init_text=config.init_text,
        freeze_vision=config.freeze_vision,
        freeze_text=config.freeze_text,
        temporal_layers=config.temporal_layers,
    )
