"""Tiny training runs on generated videos, shared by the engine tests."""

import json
from pathlib import Path

from actionclip.engine.config import load_config, save_config


def overrides(data_root, output, **extra):
    values = {
        "model.name": "actionclip-tiny-vit",
        "model.pretrained": None,
        "model.visual_prompt": "Transf",
        "model.num_frames": 4,
        "data.format": "synthetic",
        "data.root": str(data_root),
        "data.image_size": 32,
        "data.batch_size": 8,
        "data.workers": 0,
        "data.train_transform": {"grayscale_p": 0.0, "hue": 0.0},
        "data.options": {
            "shapes": ["circle", "square"],
            "colours": ["red", "blue"],
            "motions": ["left"],
            "clips_per_class": 8,
            "val_clips_per_class": 3,
            "size": 32,
            "num_frames": 6,
        },
        "optim.lr": 1e-3,
        "optim.new_ratio": 1.0,
        "optim.weight_decay": 0.05,
        "optim.epochs": 4,
        "optim.warmup_epochs": 0.25,
        "train.output": str(output),
        "train.seed": 0,
        "train.log_every": 1,
        "eval.batch_size": 8,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def write_config(path, overrides):
    config = load_config(None, overrides)
    save_config(config, path)
    return path


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]
