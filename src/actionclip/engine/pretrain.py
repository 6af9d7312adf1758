"""Contrastive CLIP pre-training on image-caption pairs: the "pre-train" step of the paradigm, for your own data.

Any open_clip model (a built-in name or a config registered with ``register_model_config``) is trained from
random weights with the same symmetric KL loss ActionCLIP fine-tunes with (Eq. 4), where every pair of
identical captions in a batch is a positive. With one positive per row that loss is InfoNCE up to a constant;
with repeated captions ("a red circle" five times in a batch) it stops pushing apart images that the text
cannot tell apart. AdamW, linear warm-up then cosine decay. The result is an open_clip state dict that
``actionclip.create_model(name, pretrained=path)`` loads.

Data: a CSV with a ``path,caption`` header (paths relative to the CSV) or a folder where each image
``x.png`` / ``x.jpg`` has its caption in ``x.txt``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import open_clip
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from actionclip.data.transforms import CLIP_MEAN, CLIP_STD
from actionclip.engine.optim import OptimConfig, build_param_groups, warmup_cosine_factor
from actionclip.losses import kl_contrastive_loss
from actionclip.models.backbone import build_clip, get_model_config
from actionclip.models.text import make_tokenizer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# A batch is (CLIP-normalised images [B, 3, S, S], caption tokens [B, L]).
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PretrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: float = 0.1  # fraction of the steps
    seed: int = 0
    log_every: int = 50


def fused_adamw(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """``engine.optim.build_optimizer`` with the fused kernel: on a tiny CLIP the default AdamW step over the
    49408 x width token embedding costs as much as the forward pass on a CPU, and the fused kernel is far cheaper."""
    return torch.optim.AdamW(build_param_groups(model, config), lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


def caption_groups(tokens: torch.Tensor) -> torch.Tensor:
    """One id per distinct caption in the batch: identical token rows share an id (and are positives)."""
    return torch.unique(tokens, dim=0, return_inverse=True)[1]


def contrastive_loss(clip: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    image_features = clip.encode_image(images, normalize=True)
    text_features = clip.encode_text(tokens, normalize=True)
    logits = clip.logit_scale.exp() * image_features @ text_features.t()
    return kl_contrastive_loss(logits, logits.t(), caption_groups(tokens))


def pretrain_clip(
    clip: nn.Module, next_batch: Callable[[int], Batch], config: PretrainConfig, log: Callable[[str], None] | None = None
) -> list[float]:
    """Train ``clip`` in place for ``config.steps`` steps on ``next_batch(step)``; returns the loss of every step.

    Weight decay skips biases, norms, embeddings and the logit scale: token embeddings of words that are rare
    in the captions get few gradients and would otherwise decay towards zero between them.
    """
    torch.manual_seed(config.seed)
    optimizer = fused_adamw(clip, OptimConfig(lr=config.lr, weight_decay=config.weight_decay, decay_norm_bias=False))
    warmup = round(config.warmup * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, config.steps))
    clip.train()
    losses = []
    for step in range(config.steps):
        images, tokens = next_batch(step)
        loss = contrastive_loss(clip, images, tokens)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # as CLIP: the temperature may not go below 0.01
            clip.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if log and ((step + 1) % config.log_every == 0 or step + 1 == config.steps):
            log(f"pretrain step {step + 1}/{config.steps} loss {loss.item():.4f} logit scale {clip.logit_scale.exp().item():.1f}")
    clip.eval()
    return losses


def check_captions_fit(texts: Sequence[str], context_length: int) -> int:
    """The longest caption in tokens (with start and end tokens); raises if any would be cut to ``context_length``,
    which the tokenizer does silently."""
    tokenizer = open_clip.SimpleTokenizer()
    lengths = {text: len(tokenizer.encode(text)) + 2 for text in set(texts)}
    longest = max(lengths, key=lengths.get)
    if lengths[longest] > context_length:
        raise ValueError(f"caption {longest!r} has {lengths[longest]} tokens; the text tower's context length is {context_length}")
    return lengths[longest]


class ImageCaptionPairs(Dataset):
    """Image-caption pairs from a ``path,caption`` CSV or a folder of images with same-named ``.txt`` captions;
    items are (CLIP-normalised ``[3, S, S]`` image, caption)."""

    def __init__(self, source: str | Path, image_size: int):
        source = Path(source)
        if source.is_dir():
            images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
            if missing:
                raise FileNotFoundError(f"{source}: no caption file for {missing[0]} (expected {Path(missing[0]).stem}.txt)")
            self.pairs = [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images]
        else:
            with open(source, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or not {"path", "caption"} <= set(reader.fieldnames):
                    raise ValueError(f"{source}: expected a CSV with a 'path,caption' header, got {reader.fieldnames}")
                self.pairs = [(source.parent / row["path"], row["caption"].strip()) for row in reader]
        if not self.pairs:
            raise ValueError(f"{source}: no image-caption pairs")
        self.transform = open_clip.image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path, caption = self.pairs[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), caption


def loader_batches(dataset: Dataset, tokenize, batch_size: int, seed: int, workers: int = 0) -> Callable[[int], Batch]:
    """``next_batch`` over shuffled epochs of ``dataset`` (the last incomplete batch of an epoch is dropped)."""
    batch_size = min(batch_size, len(dataset))

    def epochs() -> Iterator[Batch]:
        epoch = 0
        while True:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=True, num_workers=workers)
            for images, captions in loader:
                yield images, tokenize(list(captions))
            epoch += 1

    stream = epochs()
    return lambda step: next(stream)


def save_clip(clip: nn.Module, model_config: dict, output: str | Path, extra: dict | None = None) -> Path:
    """``output/clip.pt`` (an open_clip state dict), ``output/model_config.json`` (register it under a name to
    rebuild a custom architecture) and ``output/pretrain.json`` (``extra``: settings, losses)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "clip.pt"
    torch.save(clip.state_dict(), path)
    (output / "model_config.json").write_text(json.dumps(model_config, indent=2))
    if extra is not None:
        (output / "pretrain.json").write_text(json.dumps(extra, indent=2))
    return path


def pretrain_from_files(
    data: str | Path,
    model_name: str,
    output: str | Path,
    config: PretrainConfig = PretrainConfig(),
    workers: int = 0,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Pre-train ``model_name`` from random weights on the pairs in ``data``; returns the saved ``clip.pt``."""
    model_config = get_model_config(model_name)
    torch.manual_seed(config.seed)
    clip = build_clip(model_config)
    dataset = ImageCaptionPairs(data, model_config["vision_cfg"]["image_size"])
    context_length = model_config["text_cfg"].get("context_length", 77)
    check_captions_fit([caption for _, caption in dataset.pairs], context_length)
    tokenize = make_tokenizer(model_config)
    started, cpu = time.perf_counter(), time.process_time()
    losses = pretrain_clip(clip, loader_batches(dataset, tokenize, config.batch_size, config.seed, workers), config, log)
    extra = {
        "model": model_name,
        "data": str(data),
        "pairs": len(dataset),
        "config": asdict(config),
        "losses": losses,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
    }
    return save_clip(clip, model_config, output, extra)
