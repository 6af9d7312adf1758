"""The demo's recipes: its settings, the two tiny CLIPs and their pre-training, the variants and their fine-tuning.

1. Pre-train. A tiny CLIP (open_clip, a small ResNet or ViT image tower on 32x32 frames, the real CLIP BPE tokenizer)
   is trained contrastively on the world's single images (``world.pretraining_pairs``). Still captions also say where
   a shape is and how big ("red circle on the left", "small red circle"), so that frame features carry what Transf
   needs to read motion from a sequence of frames.
2. Prompt + fine-tune. ActionCLIP on 8-frame videos of the 48 training classes, with the objective and textual
   prompts of each variant, frame features L2-normalised (``UnitFrameFeatures``). Each batch holds clips with their
   time-reversed twins: with 48 classes and 16 videos the opposite motion is otherwise rarely in the batch to be
   contrasted against.

The variants follow the paper's ablations (Tables 1-4), and X-CLIP is compared with ActionCLIP on the second tiny
CLIP, whose image tower is a ViT (X-CLIP's cross-frame attention needs one): see ``VARIANTS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import actionclip
from actionclip.data.transforms import normalize
from actionclip.demo.world import FRAMES, SIZE, Videos, pretraining_pairs
from actionclip.engine.objectives import create_objective
from actionclip.engine.optim import OptimConfig, warmup_cosine_factor
from actionclip.engine.pretrain import PretrainConfig, check_captions_fit, fused_adamw, pretrain_clip
from actionclip.models.backbone import build_clip
from actionclip.models.build import ARCHITECTURES
from actionclip.models.text import make_tokenizer

# The tiny CLIP of each image tower, as registered with open_clip.
MODEL_NAMES = {"resnet": "actionclip-demo-tiny", "vit": "actionclip-demo-tiny-vit"}


@dataclass(frozen=True)
class Variant:
    paper: str  # the ablation it mirrors
    arch: str = "actionclip"
    visual_prompt: str = "Transf"
    templates: str = "actionclip"
    pretrained: bool = True
    tower: str = "resnet"  # the tiny CLIP's image tower (a key of MODEL_NAMES)
    # The training objective (engine/objectives.py): "kl", ActionCLIP's KL loss over in-batch video-text pairs;
    # "ce", X-CLIP's cross-entropy over all class names; "head", cross-entropy over class indices (unimodal).
    objective: str = "kl"
    freeze_text: bool = False
    label_smoothing: float = 0.0


# X-CLIP's recipe: cross-entropy over the label words of every class, label smoothing 0.1, the text tower frozen.
XCLIP_RECIPE = {"templates": "label_only", "objective": "ce", "freeze_text": True, "label_smoothing": 0.1}
VARIANTS = {
    "actionclip_transf": Variant("ActionCLIP: pre-trained, textual prompts, Transf"),
    "actionclip_meanp": Variant("Table 4: MeanP instead of Transf", visual_prompt="MeanP"),
    "unimodal": Variant("Table 1: same video encoder + linear head, cross-entropy", arch="unimodal", objective="head"),
    "random_init": Variant("Table 2: no pre-training (random init)", pretrained=False),
    "label_only": Variant("Table 3: label words only, no templates", templates="label_only"),
    "actionclip_vit": Variant("ActionCLIP (Transf) on the ViT tower, beside X-CLIP", tower="vit"),
    "actionclip_vit_ce": Variant("ActionCLIP (Transf) on the ViT tower, X-CLIP's recipe", tower="vit", **XCLIP_RECIPE),
    "xclip": Variant(
        "X-CLIP on the ViT tower, its recipe: cross-entropy over class names, frozen text", arch="xclip", tower="vit", **XCLIP_RECIPE
    ),
}


@dataclass
class DemoConfig:
    seed: int = 0
    threads: int = 2  # variants fine-tuned at once, one single-threaded process each
    variants: tuple[str, ...] = tuple(VARIANTS)
    pretrain_images: int = 8192  # pool of generated image-caption pairs
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(steps=500, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100)
    )
    # The ViT learns shapes more slowly than the ResNet: 500 steps gave 80% colour x shape, 1000 steps 97%.
    pretrain_vit: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(steps=1000, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100)
    )
    finetune_steps: int = 300
    finetune_batch: int = 16  # videos: half drawn, half their time-reversed twins
    finetune_lr: float = 5e-4
    temporal_lr_ratio: float = 3.0  # the paper's 10x: Transf reached 21% motion here, 3x: 74%
    train_draws: int = 12  # drawings per (colour, shape, forward motion): 12 training videos per class
    test_draws: int = 4  # 4 test videos per class
    check_images: int = 20  # still test images per (colour, shape) for the pre-training check


def quick_config(seed: int = 0, threads: int = 2) -> DemoConfig:
    """A shorter run for CI: fewer steps and videos, every variant."""
    return DemoConfig(
        seed=seed,
        threads=threads,
        pretrain_images=4096,
        finetune_steps=150,
        train_draws=6,
        test_draws=4,
        pretrain=PretrainConfig(steps=250, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100),
        pretrain_vit=PretrainConfig(steps=500, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100),
    )


VISION_CONFIGS = {
    # open_clip's ModifiedResNet: the tower of most variants, as it learns shapes fastest for its CPU time.
    "resnet": {"image_size": SIZE, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    # A ViT for X-CLIP. 4x4 patches: with 8x8 ones it reached 75% colour x shape after 1500 steps, 4x4 97% after 1000.
    "vit": {"image_size": SIZE, "layers": 2, "width": 64, "patch_size": 4, "head_width": 32},
}


def model_config(context_length: int, tower: str = "resnet") -> dict:
    """The tiny CLIP with the image tower ``tower`` (a key of ``VISION_CONFIGS``); the text tower is the same."""
    return {
        "embed_dim": 64,
        "quick_gelu": True,  # so actionclip.create_model(None, pretrained=clip.pt) infers this model from the file
        "vision_cfg": VISION_CONFIGS[tower],
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }


def pretrain_tower(config: DemoConfig, context_length: int, tower: str, log) -> tuple[nn.Module, list[float]]:
    """The tiny CLIP with the image tower ``tower``, pre-trained contrastively on the world's image-caption pairs;
    returns it and the loss of every step."""
    settings = config.pretrain if tower == "resnet" else config.pretrain_vit
    images, captions = pretraining_pairs(config.pretrain_images, config.seed)
    check_captions_fit(captions, context_length)
    torch.manual_seed(config.seed)
    clip = build_clip(model_config(context_length, tower))
    tokens = make_tokenizer(model_config(context_length, tower))(captions)
    generator = torch.Generator().manual_seed(config.seed)

    def next_batch(step: int):
        batch = torch.randint(len(images), (settings.batch_size,), generator=generator)
        return normalize(images[batch]), tokens[batch]

    return clip, pretrain_clip(clip, next_batch, settings, lambda line: log(f"{tower}: {line}"))


class UnitFrameFeatures(nn.Module):
    """L2-normalises each frame feature before the temporal module. Not in ActionCLIP: the tiny CLIP's frame
    features have norms in the tens (docs/demo.md), which drown Transf's frame-position embeddings (initialised with
    std 0.02, a norm near 0.16 in 64 dimensions) and its residual branches, and without this Transf learnt no frame
    order at all (motion as MeanP's). Applied to every variant alike."""

    def __init__(self, temporal: nn.Module):
        super().__init__()
        self.temporal = temporal

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.temporal(F.normalize(frames, dim=-1))


def build_variant(variant: Variant, clip_path: Path, num_classes: int, seed: int):
    model = actionclip.create_model(
        MODEL_NAMES[variant.tower],
        pretrained=str(clip_path) if variant.pretrained else None,
        visual_prompt=variant.visual_prompt,
        num_frames=FRAMES,
        arch=variant.arch,
        num_classes=num_classes if ARCHITECTURES[variant.arch].has_class_head else None,
        freeze_text=variant.freeze_text,
        seed=seed,
    )
    # Renamed "video.temporal.temporal.*" / "video.mit.temporal.*": still in the new-module group.
    if variant.arch == "xclip":  # its multi-frame integration transformer has the same frame-position embeddings
        model.video.mit = UnitFrameFeatures(model.video.mit)
    else:
        model.video.temporal = UnitFrameFeatures(model.video.temporal)
    return model


def finetune(model, variant: Variant, train: Videos, config: DemoConfig, seed: int) -> list[float]:
    """A compact loop over in-memory videos. The engine's Trainer reads a YAML config and decodes files through
    DataLoader workers with checkpoints and DDP; here the whole set is one tensor and batches are twin pairs."""
    optimizer = fused_adamw(
        model, OptimConfig(lr=config.finetune_lr, new_ratio=config.temporal_lr_ratio, weight_decay=0.05, decay_norm_bias=False)
    )
    warmup = round(0.1 * config.finetune_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, warmup, config.finetune_steps))
    objective = create_objective(model, train.names, variant.templates, variant.objective, label_smoothing=variant.label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    losses = []
    for step in range(config.finetune_steps):
        pairs = torch.randint(len(train.labels) // 2, (config.finetune_batch // 2,), generator=generator)
        index = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        loss = objective(model, normalize(train.frames[index]), train.labels[index], generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses
