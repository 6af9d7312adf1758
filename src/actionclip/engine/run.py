"""From a config to a model, datasets and a run: what ``actionclip train`` and ``actionclip eval`` do."""
from __future__ import annotations

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


def _output_info(config: Config):
    info = distributed.init(config.train.device)
    torch.manual_seed(config.train.seed)
    return info


def run_training(config: Config, resume: bool = False) -> dict:
    """Build the model and datasets a config describes, train, and return the last evaluation summary."""
    from actionclip.data.build import build_dataset, has_val

    info = _output_info(config)
    try:
        num_frames = config.model.num_frames
        # Rank 0 writes generated data first; the others then read it.
        if info.is_main:
            train_set = build_dataset(config.data, "train", num_frames, seed=config.train.seed)
        distributed.barrier(info)
        if not info.is_main:
            train_set = build_dataset(config.data, "train", num_frames, seed=config.train.seed)
        val_set = build_dataset(config.data, "val", num_frames, seed=config.train.seed, views=config.eval.views) if has_val(config.data) else None
        model = model_from_config(config.model, num_classes=len(train_set.classes))
        if config.train.grad_checkpointing:
            model.video.visual.set_grad_checkpointing(True)
        return Trainer(config, model, train_set, val_set, info).train(resume=resume)
    finally:
        distributed.cleanup()


def run_evaluation(config: Config, checkpoint: str | None = None, output: str | None = None) -> dict:
    """Evaluate a checkpoint (or the config's model) on the config's validation data with ``eval.views``;
    writes ``eval.json``, ``per_class.csv`` and ``confusion.png`` into ``output``."""
    from actionclip.data.build import build_dataset

    info = _output_info(config)
    try:
        if checkpoint is not None:
            config.model.checkpoint = checkpoint
        val_set = build_dataset(config.data, "val", config.model.num_frames, seed=config.train.seed, views=config.eval.views)
        model = model_from_config(config.model, num_classes=len(val_set.classes)).to(info.device)
        result = predict_dataset(
            model, val_set, val_set.classes, templates=config.prompts.templates, ensemble=config.prompts.ensemble,
            batch_size=config.eval.batch_size, workers=config.data.workers, info=info,
            autocast_dtype=autocast_dtype(config.train.precision, info.device),
        )
        summary = {**summarize(result), "views": config.eval.views, "checkpoint": config.model.checkpoint}
        if info.is_main:
            write_report(output or Path(config.train.output) / "eval", summary, result, val_set.classes)
        return summary
    finally:
        distributed.cleanup()
