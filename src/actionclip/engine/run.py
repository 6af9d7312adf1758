"""From a config to a model, datasets and a run: what ``actionclip train`` and ``actionclip eval`` do."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from actionclip.checkpoints.sources import create_model, read_model
from actionclip.data.build import DataConfig, build_dataset, has_val
from actionclip.data.datasets import VideoDataset
from actionclip.data.subsets import class_subsets
from actionclip.engine.config import Config, ModelConfig, PromptConfig
from actionclip.engine.eval_checks import check_classes, check_frames, check_image_size
from actionclip.engine.evaluate import predict_dataset, summarize, write_report
from actionclip.engine.train import Trainer
from actionclip.host import distributed
from actionclip.host.devices import resolve_precision
from actionclip.models.build import ARCHITECTURES
from actionclip.models.precision import prepare_for_inference


def model_from_config(config: ModelConfig, num_classes: int | None = None) -> torch.nn.Module:
    if config.checkpoint:
        return read_model(config.checkpoint, visual_prompt=config.visual_prompt, num_frames=config.num_frames)
    return create_model(
        config.name,
        config.pretrained,
        config.visual_prompt,
        config.num_frames,
        arch=config.arch,
        num_classes=num_classes if ARCHITECTURES[config.arch].has_class_head else None,
        quick_gelu=config.quick_gelu,
        init_vision=config.init_vision,
        init_text=config.init_text,
        freeze_vision=config.freeze_vision,
        freeze_text=config.freeze_text,
        temporal_layers=config.temporal_layers,
    )


def _start_process(config: Config):
    """Join the process group (if torchrun started several), seed this process, and with ``train.deterministic``
    have torch use deterministic kernels only."""
    if config.train.deterministic:
        # cuBLAS reads this when it starts, so before any GPU work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    info = distributed.init(config.train.device)
    torch.manual_seed(config.train.seed)
    return info


def _datasets(config: Config):
    """The training set and the validation set (None without validation data) a config describes."""
    num_frames, seed = config.model.num_frames, config.train.seed
    train_set = build_dataset(config.data, "train", num_frames, seed=seed)
    val_set = build_dataset(config.data, "val", num_frames, seed=seed, views=config.eval.views) if has_val(config.data) else None
    return train_set, val_set


def run_training(config: Config, resume: bool = False) -> dict:
    """Build the model and datasets a config describes, train, and return the last evaluation summary."""
    info = _start_process(config)
    try:
        # Rank 0 alone reads the annotations (and writes generated videos); the others receive the samples, class names
        # and settings, never video.
        train_set, val_set = distributed.made_on_main(lambda: _datasets(config), info)
        model = model_from_config(config.model, num_classes=len(train_set.classes))
        if config.train.grad_checkpointing:
            model.video.visual.set_grad_checkpointing(True)
        return Trainer(config, model, train_set, val_set, info).train(resume=resume)
    finally:
        distributed.cleanup()


def allow_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on a CUDA device: the fp32 parts of an evaluation (all of it with
    ``eval.precision: fp32``) run on the tensor cores, with 10 mantissa bits in the products instead of 23."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"


def remembered_test_settings(model: torch.nn.Module, config: Config) -> tuple:
    """The templates and input normalisation to evaluate ``model`` with: what an imported model's source used at
    test time (its config's ``templates`` and ``normalization``, e.g. ViFi-CLIP's "a photo of a {}." and ImageNet's
    statistics) where ``config`` leaves them at their defaults, else ``config``'s."""
    remembered = getattr(model, "config", None)
    templates, normalization = config.prompts.templates, None
    if getattr(remembered, "templates", None) and templates == PromptConfig.model_fields["templates"].default:
        templates = remembered.templates
    if getattr(remembered, "normalization", None) and config.data.normalization == DataConfig.model_fields["normalization"].default:
        normalization = remembered.normalization
    return templates, normalization


def run_evaluation(config: Config, checkpoint: str | None = None, output: str | None = None, model=None) -> dict:
    """Evaluate a checkpoint (or the config's model) on the config's validation data with ``eval.views``.

    With ``eval.splits`` or ``eval.class_subsets`` each part is evaluated and reported, then the mean and
    standard deviation of every metric over the parts (the zero-shot protocols). Reports go to ``output``.
    ``eval.precision`` bf16 or fp16 (``auto``: bf16 on GPUs) casts the frame encoder's weights, not autocast: the
    once-per-video modules (temporal module, a classifier head) and the similarities stay fp32, which autocast would
    round (``actionclip.models.precision``). On CUDA the fp32 matmuls use TF32.
    A model that cannot score the data (see ``eval_checks``) raises ``EvaluationMismatch`` before any video is decoded.
    ``model``: one already built (``checkpoint`` then only names it in the report). One that is not a torch module
    (the ONNX Runtime model of ``actionclip.inference.onnx_backend``) is evaluated as it is, on the CPU frames of the
    loader: no device move and no ``eval.precision``, which are the torch weights'.
    """
    info = _start_process(config)
    try:
        if checkpoint is not None:
            config.model.checkpoint = checkpoint
        output = Path(output or Path(config.train.output) / "eval")
        # Rank 0 alone reads the annotations; the other ranks receive the datasets (as for training).
        parts = distributed.made_on_main(lambda: _evaluation_datasets(config), info)
        num_classes = [len(val_set.classes) for _, val_set in parts.values()]
        model = model if model is not None else model_from_config(config.model, num_classes=num_classes[0])
        source = config.model.checkpoint or f"model {config.model.name}"
        for count in num_classes:
            check_classes(model, source, count)
        check_image_size(model, source, config.data.image_size)
        warning = check_frames(model, source, config.model.num_frames)
        if isinstance(model, torch.nn.Module):
            model = model.to(info.device)
            prepare_for_inference(model, resolve_precision(config.eval.precision, info.device))
        allow_tf32(info.device)
        summaries = {}
        for name, (part, val_set) in parts.items():
            templates, normalization = remembered_test_settings(model, part)
            result = predict_dataset(
                model,
                val_set,
                val_set.classes,
                templates=templates,
                ensemble=part.prompts.ensemble,
                batch_size=part.eval.batch_size,
                workers=part.data.workers,
                info=info,
                normalization=normalization,
            )
            summaries[name] = summarize(result)
            if info.is_main:
                write_report(output / name if name else output, summaries[name], result, val_set.classes)
        summary = summaries[""] if "" in summaries else _mean_std(summaries)
        summary.update(views=config.eval.views, checkpoint=config.model.checkpoint, warnings=[warning] if warning else [])
        if info.is_main:
            output.mkdir(parents=True, exist_ok=True)
            (output / "eval.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        distributed.cleanup()


def _evaluation_datasets(config: Config) -> dict[str, tuple[Config, VideoDataset]]:
    """Each part's config and its validation dataset."""
    return {
        name: (part, build_dataset(part.data, "val", part.model.num_frames, seed=part.train.seed, views=part.eval.views))
        for name, part in _evaluation_parts(config).items()
    }


def _evaluation_parts(config: Config) -> dict[str, Config]:
    """The config of each part evaluated on its own: one per ``eval.splits`` split or ``eval.class_subsets`` subset,
    else the config itself under the name ""."""
    parts: dict[str, Config] = {}
    if config.eval.splits:
        for split in config.eval.splits:
            part = copy.deepcopy(config)
            part.data.split = split
            parts[f"split{split}"] = part
    elif config.eval.class_subsets:
        settings = config.eval.class_subsets
        num_classes = len(build_dataset(config.data, "val", config.model.num_frames).classes)
        for number, ids in enumerate(class_subsets(num_classes, settings.size, settings.count, settings.seed), 1):
            part = copy.deepcopy(config)
            part.data.options.class_ids = ids
            parts[f"subset{number}"] = part
    else:
        parts[""] = config
    return parts


def _mean_std(summaries: dict[str, dict]) -> dict:
    """Each part's summary, and ``<metric>_mean`` / ``<metric>_std`` (population std) over the parts."""
    combined: dict = {"parts": summaries}
    metrics = [k for k, v in next(iter(summaries.values())).items() if isinstance(v, float)]
    for metric in metrics:
        values = torch.tensor([s[metric] for s in summaries.values()], dtype=torch.float64)
        combined[f"{metric}_mean"] = values.mean().item()
        combined[f"{metric}_std"] = values.std(unbiased=False).item()
    combined["unreadable"] = [item for s in summaries.values() for item in s["unreadable"]]
    return combined
