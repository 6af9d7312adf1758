"""``actionclip demo``: pre-train, prompt, fine-tune, end to end on generated data, offline on a CPU in minutes.

Data. Videos of coloured shapes (``data/synthetic.draw_clip``): 4 colours x 3 shapes x 6 motions = 72 classes
such as "red circle moving left". Opposite motions are one drawing played both ways, so only frame order tells
them apart. The (colour, shape) pairs {red, green} x {circle, square} are held out of fine-tuning with all
their motions: 48 classes to fine-tune on, 24 unseen compositions for zero-shot. Every colour, shape and motion
is seen in fine-tuning, only not in these combinations. Holding out whole (colour, shape) pairs keeps two
attributes from giving the third away, and holding out a 2 x 2 block keeps colour alone (or shape alone) from
naming the pair among the unseen classes: zero-shot needs both.

1. Pre-train. A tiny CLIP (open_clip, a small ResNet image tower on 32x32 frames, the real CLIP BPE tokenizer)
   is trained contrastively on single images: still frames captioned "red circle", and motion-trail stills -- a clip's frames
   painted over each other, fainter the older -- captioned "red circle moving left". Like web image-text data
   (and unlike the fine-tuning split), the pairs cover every composition. The trails are what grounds the motion
   words: without them the text tower never sees "left" apart from "right" and maps both to one embedding. Still
   captions also say where a shape is and how big ("red circle on the left", "small red circle"), so that frame
   features carry what Transf needs to read motion from a sequence of frames.
2. Prompt + fine-tune. ActionCLIP on 8-frame videos of the 48 training classes, KL loss over in-batch video-text
   pairs, the 16 textual prompts of the paper, frame features L2-normalised (``UnitFrameFeatures``). Each batch
   holds clips with their time-reversed twins: with 48 classes and 16 videos the opposite motion is otherwise rarely in the batch to be contrasted against.
3. Evaluate held-out videos: supervised over the 48 training classes, zero-shot over the 24 unseen compositions.

Variants follow the paper's ablations (Tables 1-4), and X-CLIP is compared with ActionCLIP on a second tiny CLIP
with a ViT image tower (X-CLIP's cross-frame attention needs one), pre-trained the same way: see ``VARIANTS``.
"""
from __future__ import annotations

import copy
import json
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import actionclip
from actionclip.data.synthetic import MOTIONS, SHAPES, class_text, draw_clip
from actionclip.data.transforms import normalize, to_tchw
from actionclip.engine.evaluate import predict_dataset
from actionclip.engine.mixing import smoothed_targets, soft_cross_entropy
from actionclip.engine.optim import OptimConfig, warmup_cosine_factor
from actionclip.losses import kl_contrastive_loss
from actionclip.models.backbone import build_clip, register_model_config
from actionclip.models.xclip import XCLIP
from actionclip.models.text import make_tokenizer
from actionclip.precision import prepare_for_inference
from actionclip.pretrain import PretrainConfig, check_captions_fit, fused_adamw, pretrain_clip, save_clip
from actionclip.prompts import ACTIONCLIP_TEMPLATES, PromptTokens, fill_templates

# The tiny CLIP of each image tower, as registered with open_clip.
MODEL_NAMES = {"resnet": "actionclip-demo-tiny", "vit": "actionclip-demo-tiny-vit"}
COLOURS = ("red", "green", "blue", "yellow")
HELD_OUT = (("red", "circle"), ("red", "square"), ("green", "circle"), ("green", "square"))
# draw_clip draws these; "left", "up", "shrink" are the same drawings played backwards.
FORWARD_MOTIONS = {"right": "left", "down": "up", "grow": "shrink"}
SIZE, FRAMES = 32, 8


@dataclass(frozen=True)
class Variant:
    paper: str  # the ablation it mirrors
    arch: str = "actionclip"
    visual_prompt: str = "Transf"
    templates: str = "actionclip"
    pretrained: bool = True
    tower: str = "resnet"  # the tiny CLIP's image tower (a key of MODEL_NAMES)
    # "kl": ActionCLIP's, the KL loss over in-batch video-text pairs, both towers fine-tuned; "ce": X-CLIP's,
    # cross-entropy with label smoothing over all class names, the text tower frozen; "head": cross-entropy
    # over class indices (the unimodal baseline).
    recipe: str = "kl"


VARIANTS = {
    "actionclip_transf": Variant("ActionCLIP: pre-trained, textual prompts, Transf"),
    "actionclip_meanp": Variant("Table 4: MeanP instead of Transf", visual_prompt="MeanP"),
    "unimodal": Variant("Table 1: same video encoder + linear head, cross-entropy", arch="unimodal", recipe="head"),
    "random_init": Variant("Table 2: no pre-training (random init)", pretrained=False),
    "label_only": Variant("Table 3: label words only, no templates", templates="label_only"),
    "actionclip_vit": Variant("ActionCLIP (Transf) on the ViT tower, beside X-CLIP", tower="vit"),
    "actionclip_vit_ce": Variant("ActionCLIP (Transf) on the ViT tower, X-CLIP's recipe", templates="label_only",
                                 tower="vit", recipe="ce"),
    "xclip": Variant("X-CLIP on the ViT tower, its recipe: cross-entropy over class names, frozen text",
                     arch="xclip", templates="label_only", tower="vit", recipe="ce"),
}


@dataclass
class DemoConfig:
    seed: int = 0
    threads: int = 2  # variants fine-tuned at once, one single-threaded process each
    variants: tuple[str, ...] = tuple(VARIANTS)
    pretrain_images: int = 8192  # pool of generated image-caption pairs
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=500, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100))
    # The ViT learns shapes more slowly than the ResNet: 500 steps gave 80% colour x shape, 1000 steps 97%.
    pretrain_vit: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=1000, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100))
    finetune_steps: int = 300
    finetune_batch: int = 16  # videos: half drawn, half their time-reversed twins
    finetune_lr: float = 5e-4
    temporal_lr_ratio: float = 3.0  # the paper's 10x: Transf reached 21% motion here, 3x: 74%
    label_smoothing: float = 0.1  # X-CLIP's recipe
    train_draws: int = 12  # drawings per (colour, shape, forward motion): 12 training videos per class
    test_draws: int = 4  # 4 test videos per class
    check_images: int = 20  # still test images per (colour, shape) for the pre-training check


def quick_config(seed: int = 0, threads: int = 2) -> DemoConfig:
    """About a minute on 2 CPU cores, for CI: fewer steps and videos, every variant."""
    return DemoConfig(seed=seed, threads=threads, pretrain_images=4096, finetune_steps=150, train_draws=6, test_draws=4,
                      pretrain=PretrainConfig(steps=250, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100),
                      pretrain_vit=PretrainConfig(steps=500, batch_size=64, lr=2e-3, weight_decay=0.1, log_every=100))


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


# ---- data --------------------------------------------------------------------------------------------------

def all_classes() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def motion_trail(clip: np.ndarray, motion: str) -> np.ndarray:
    """One still ``[H, W, 3]`` showing a clip's motion: every frame's shape painted over the last, from faint
    (oldest) to full colour (newest). For growing and shrinking the larger shapes are painted first so that
    the smaller ones stay visible; their brightness still says which came first."""
    background = clip[0, 0, 0].astype(np.float32)
    foreground = (clip != clip[0, 0, 0]).any(-1)
    order = range(len(clip))
    if motion in ("grow", "shrink"):
        order = sorted(order, key=lambda t: -int(foreground[t].sum()))
    image = np.broadcast_to(background, clip.shape[1:]).copy()
    for t in order:
        weight = 0.25 + 0.75 * t / (len(clip) - 1)
        image[foreground[t]] = background + weight * (clip[t][foreground[t]] - background)
    return image.round().astype(np.uint8)


def _rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *ids])


def still_caption(frame: np.ndarray, colour: str, shape: str, rng: np.random.Generator) -> str:
    """"red circle", or with where the shape is ("red circle on the left", "red circle at the top") or how big
    ("small red circle"). Video frames carry no trails, so telling "moving left" from "moving right" from frames
    needs image features that know where a shape is and how large: these captions ask for that."""
    mask = (frame != frame[0, 0]).any(-1)
    ys, xs = np.nonzero(mask)
    x, y, radius = xs.mean() / SIZE, ys.mean() / SIZE, np.sqrt(mask.sum() / np.pi) / SIZE
    words = {
        1: "on the left" if x < 0.4 else "on the right" if x > 0.6 else None,
        2: "at the top" if y < 0.4 else "at the bottom" if y > 0.6 else None,
        3: "small" if radius < 0.11 else "big" if radius > 0.2 else None,
    }
    kind = int(rng.integers(4))
    if kind == 0 or words[kind] is None:
        return f"{colour} {shape}"
    return f"{words[kind]} {colour} {shape}" if kind == 3 else f"{colour} {shape} {words[kind]}"


def pretraining_pairs(count: int, seed: int, stream: int = 1) -> tuple[torch.Tensor, list[str]]:
    """``count`` images ``[N, 3, H, W]`` (uint8) and captions: half still frames ("red circle", "red circle on
    the left", ...), half motion trails ("red circle moving left"), of every colour, shape and motion."""
    classes = all_classes()
    images, captions = [], []
    for i in range(count):
        rng = _rng(seed, stream, i)
        colour, shape, motion = classes[rng.integers(len(classes))]
        clip = draw_clip(shape, colour, motion, SIZE, FRAMES, rng)
        if i % 2:
            images.append(motion_trail(clip, motion))
            captions.append(class_text(colour, shape, motion))
        else:
            images.append(clip[rng.integers(FRAMES)])
            captions.append(still_caption(images[-1], colour, shape, rng))
    return to_tchw(np.stack(images)), captions


@dataclass
class Videos:
    frames: torch.Tensor  # uint8 [N, T, 3, H, W]; rows 2k and 2k+1 are one drawing played both ways
    labels: torch.Tensor  # index into ``classes``
    classes: list[tuple[str, str, str]]

    @property
    def names(self) -> list[str]:
        return [class_text(*c) for c in self.classes]


def render_videos(classes: Sequence[tuple[str, str, str]], draws: int, seed: int, stream: int) -> Videos:
    """``draws`` drawings per forward motion of each (colour, shape) in ``classes``, each stored forwards and
    backwards (two classes, e.g. moving right and moving left)."""
    index = {c: i for i, c in enumerate(classes)}
    frames, labels = [], []
    for colour, shape, motion in classes:
        if motion not in FORWARD_MOTIONS:
            continue
        for j in range(draws):
            rng = _rng(seed, stream, COLOURS.index(colour), SHAPES.index(shape), MOTIONS.index(motion), j)
            clip = to_tchw(draw_clip(shape, colour, motion, SIZE, FRAMES, rng))
            frames += [clip, clip.flip(0)]
            labels += [index[(colour, shape, motion)], index[(colour, shape, FORWARD_MOTIONS[motion])]]
    return Videos(torch.stack(frames), torch.tensor(labels), list(classes))


class _Items(Dataset):
    """(CLIP-normalised video, label) items for ``predict_dataset``."""

    def __init__(self, videos: Videos):
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos.labels)

    def __getitem__(self, i: int):
        return normalize(self.videos.frames[i]), int(self.videos.labels[i])


# ---- pre-training ------------------------------------------------------------------------------------------

def single_image_accuracy(clip, images: torch.Tensor, targets: torch.Tensor, texts: list[str], tokenize) -> float:
    with torch.no_grad():
        image_features = clip.encode_image(normalize(images), normalize=True)
        text_features = clip.encode_text(tokenize(texts), normalize=True)
    return (image_features @ text_features.t()).argmax(dim=1).eq(targets).float().mean().item()


def pretrain_key(tower: str) -> str:
    """The folder of a tower's pre-trained CLIP in the output, and its key in results.json."""
    return "pretrain" if tower == "resnet" else f"pretrain_{tower}"


def pretrain_step(config: DemoConfig, output: Path, context_length: int, tower: str, log) -> tuple[Path, dict]:
    """Pre-train the tiny CLIP with the image tower ``tower`` into ``output/pretrain`` (ResNet) or
    ``output/pretrain_vit``; returns its ``clip.pt`` and the check's figures."""
    start = _clock()
    settings = config.pretrain if tower == "resnet" else config.pretrain_vit
    images, captions = pretraining_pairs(config.pretrain_images, config.seed)
    check_captions_fit(captions, context_length)
    torch.manual_seed(config.seed)
    clip = build_clip(model_config(context_length, tower))
    tokenize = make_tokenizer(model_config(context_length, tower))
    tokens = tokenize(captions)
    generator = torch.Generator().manual_seed(config.seed)

    def next_batch(step: int):
        batch = torch.randint(len(images), (settings.batch_size,), generator=generator)
        return normalize(images[batch]), tokens[batch]

    losses = pretrain_clip(clip, next_batch, settings, lambda line: log(f"{tower}: {line}"))
    # The check: fresh still frames, zero-shot over every colour x shape; fresh trails over every class.
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    stills, still_targets, trails, trail_targets = [], [], [], []
    for k, (colour, shape) in enumerate(pairs):
        for j in range(config.check_images):
            rng = _rng(config.seed, 2, k, j)
            motion = MOTIONS[j % len(MOTIONS)]
            clip_frames = draw_clip(shape, colour, motion, SIZE, FRAMES, rng)
            stills.append(clip_frames[rng.integers(FRAMES)])
            still_targets.append(k)
            trails.append(motion_trail(clip_frames, motion))
            trail_targets.append(all_classes().index((colour, shape, motion)))
    still_acc = single_image_accuracy(clip, to_tchw(np.stack(stills)), torch.tensor(still_targets), [f"{c} {s}" for c, s in pairs], tokenize)
    trail_acc = single_image_accuracy(clip, to_tchw(np.stack(trails)), torch.tensor(trail_targets), [class_text(*c) for c in all_classes()], tokenize)
    summary = {
        "image_tower": tower,
        "single_image_zero_shot_top1": still_acc,
        "single_image_chance": 1 / len(pairs),
        "motion_trail_zero_shot_top1": trail_acc,
        "motion_trail_chance": 1 / len(all_classes()),
        "final_loss": float(np.mean(losses[-20:])),
        **_since(start),
    }
    path = save_clip(clip, model_config(context_length, tower), output / pretrain_key(tower), {"losses": losses, **summary})
    log(f"pre-trained tiny CLIP ({tower}): single-image zero-shot colour x shape {still_acc:.1%} (chance "
        f"{summary['single_image_chance']:.1%}), motion-trail images over all {len(all_classes())} classes {trail_acc:.1%} "
        f"({summary['wall_s']:.0f} s)")
    return path, summary


# ---- fine-tuning -------------------------------------------------------------------------------------------

class UnitFrameFeatures(nn.Module):
    """L2-normalises each frame feature before the temporal module. Not in ActionCLIP: the tiny CLIP's frame
    features have norms near 27, which drown Transf's frame-position embeddings (initialised with std 0.02, a
    norm near 0.16 here) and its residual branches, and without this Transf learnt no frame order at all
    (motion 32%, as MeanP). Applied to every variant alike."""

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
        num_classes=num_classes if variant.arch == "unimodal" else None,
        freeze_text=variant.recipe == "ce",
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
    optimizer = fused_adamw(model, OptimConfig(lr=config.finetune_lr, new_ratio=config.temporal_lr_ratio,
                                                   weight_decay=0.05, decay_norm_bias=False))
    warmup = round(0.1 * config.finetune_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, warmup, config.finetune_steps))
    prompts = PromptTokens(model.tokenize, train.names, variant.templates) if variant.recipe == "kl" else None
    if variant.recipe == "ce":  # the frozen text tower's class features, once
        with torch.no_grad():
            class_features = model.encode_text(model.tokenize(train.names))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    losses = []
    for step in range(config.finetune_steps):
        pairs = torch.randint(len(train.labels) // 2, (config.finetune_batch // 2,), generator=generator)
        index = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        videos, labels = normalize(train.frames[index]), train.labels[index]
        if variant.recipe == "head":
            loss = F.cross_entropy(model(videos), labels)
        elif variant.recipe == "ce":
            targets = smoothed_targets(labels, len(train.names), config.label_smoothing)
            loss = soft_cross_entropy(class_logits(model, videos, class_features), targets)
        else:
            loss = kl_contrastive_loss(*model(videos, prompts.sample(labels, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def class_logits(model, videos: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, C]`` of a video batch against un-normalised class text features ``[C, D]``."""
    if isinstance(model, XCLIP):
        return model(videos, text_features=class_features)
    video_features = F.normalize(model.encode_video(videos), dim=-1)
    return model.logit_scale.exp() * video_features @ F.normalize(class_features, dim=-1).t()


def class_probabilities(model, variant: Variant, videos: Videos) -> torch.Tensor:
    """``[N, len(videos.classes)]``: each video's probabilities over the classes."""
    return predict_dataset(model, _Items(videos), videos.names, templates=variant.templates, batch_size=64, progress=False).probabilities


def bf16_agreement(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Over (fp32, bf16) probability pairs ``[N, C]`` (C may differ between pairs): how often bf16 picks fp32's
    top-1 class, and the largest fp32 margin (top-1 minus top-2 probability) among the videos where it does not,
    i.e. how near to a tie a video must be for bf16 rounding to flip it."""
    flips, margins = [], []
    for full, low in pairs:
        flipped = full.argmax(dim=1) != low.argmax(dim=1)
        top2 = full.topk(2, dim=1).values
        flips.append(flipped)
        margins += (top2[:, 0] - top2[:, 1])[flipped].tolist()
    return 1 - torch.cat(flips).float().mean().item(), max(margins, default=0.0)


def scores(predicted: torch.Tensor, videos: Videos) -> dict:
    """top-1 over ``videos.classes``, and how often the predicted class has the right colour and shape
    ("appearance") and the right motion."""
    pairs = [(videos.classes[p], videos.classes[t]) for p, t in zip(predicted.tolist(), videos.labels.tolist())]
    return {
        "top1": predicted.eq(videos.labels).float().mean().item(),
        "appearance": float(np.mean([p[:2] == t[:2] for p, t in pairs])),
        "motion": float(np.mean([p[2] == t[2] for p, t in pairs])),
    }


# ---- the run -----------------------------------------------------------------------------------------------

def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # not Linux
        return None


def splits() -> tuple[list, list]:
    """The 48 fine-tuning classes and the 24 unseen compositions."""
    classes = all_classes()
    return [c for c in classes if c[:2] not in HELD_OUT], [c for c in classes if c[:2] in HELD_OUT]


def run_variant(key: str, clip_path: Path, config: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Fine-tune and evaluate one variant. Its videos are rendered here (a second or so) from the seed, so a
    worker process needs nothing but the pre-trained file."""
    variant, start = VARIANTS[key], _clock()
    train_classes, unseen_classes = splits()
    train = render_videos(train_classes, config.train_draws, config.seed, stream=3)
    test_seen = render_videos(train_classes, config.test_draws, config.seed, stream=4)
    model = build_variant(variant, clip_path, len(train_classes), config.seed)
    losses = finetune(model, variant, train, config, config.seed)
    test_sets = {"supervised": test_seen}
    if variant.arch != "unimodal":  # a linear head has no output for classes it was not trained on
        test_sets["zero_shot"] = render_videos(unseen_classes, config.test_draws, config.seed, stream=4)
        classes = all_classes()
        # Generalised zero-shot: the unseen videos scored against all 72 classes, seen ones included.
        test_sets["generalized_zero_shot"] = replace(
            test_sets["zero_shot"], classes=classes,
            labels=torch.tensor([classes.index(unseen_classes[i]) for i in test_sets["zero_shot"].labels]))
    probabilities = {name: class_probabilities(model, variant, videos) for name, videos in test_sets.items()}
    predicted = {name: p.argmax(dim=1) for name, p in probabilities.items()}
    # The same model with bf16 weights (actionclip.precision, as predict --precision bf16): same top-1?
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    agreement, flipped_margin = bf16_agreement(
        [(probabilities[name], class_probabilities(low, variant, videos)) for name, videos in test_sets.items()])
    seen = scores(predicted["supervised"], test_seen)
    row = {
        "supervised_top1": seen["top1"],
        "zero_shot_top1": None,
        "chance": {"supervised_top1": 1 / len(train_classes), "zero_shot_top1": 1 / len(unseen_classes)},
        "supervised_appearance": seen["appearance"],
        "supervised_motion": seen["motion"],
        "final_loss": float(np.mean(losses[-20:])),
        "paper": variant.paper,
        "bf16_top1_agreement": agreement,
        "bf16_largest_flipped_margin": flipped_margin,
    }
    if "zero_shot" in test_sets:
        unseen = scores(predicted["zero_shot"], test_sets["zero_shot"])
        general = scores(predicted["generalized_zero_shot"], test_sets["generalized_zero_shot"])
        row.update(zero_shot_top1=unseen["top1"], zero_shot_appearance=unseen["appearance"], zero_shot_motion=unseen["motion"],
                   generalized_zero_shot_top1=general["top1"])
        row["chance"]["generalized_zero_shot_top1"] = 1 / len(classes)
    row.update(_since(start))
    zero_shot = "n/a" if row["zero_shot_top1"] is None else f"{row['zero_shot_top1']:.1%}"
    log(f"{key}: supervised {row['supervised_top1']:.1%}, zero-shot {zero_shot} ({row['wall_s']:.0f} s)")
    return row


def _in_worker(function: Callable, *args):
    """``function(*args, log=...)`` in a worker process: one thread and deterministic kernels, as in the parent
    that forked it."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return function(*args, log=lambda line: print(line, flush=True))


def run_demo(output: str | Path, config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> dict:
    """Run the demo into ``output`` (results.json, results.png, the pre-trained CLIP); returns the results.

    Every model trains on one thread; ``config.threads`` > 1 fine-tunes that many variants at once in worker
    processes. One thread per model keeps the numbers independent of ``threads`` and avoids OpenMP threads
    spinning against other jobs on a shared machine.
    """
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _run(output, config, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run(output: Path, config: DemoConfig, log) -> dict:
    start, load_before = _clock(), _loadavg()
    # The context length fits the longest prompt or caption, and nothing may be cut.
    labels = [class_text(*c) for c in all_classes()]
    context_length = check_captions_fit(fill_templates(ACTIONCLIP_TEMPLATES, labels) + labels, 77)
    for tower, name in MODEL_NAMES.items():
        register_model_config(name, model_config(context_length, tower))
    towers = [tower for tower in MODEL_NAMES if any(VARIANTS[key].tower == tower for key in config.variants)]
    pretrained: dict[str, tuple[Path, dict]] = {}

    # Forked workers (spawned ones would re-run an unguarded __main__, ``python -m actionclip`` included); where
    # there is no fork (Windows) everything runs one after the other, with the same results. The towers pre-train
    # side by side, and each tower's variants start as soon as it is ready.
    jobs = len(towers) + len(config.variants)
    if config.threads > 1 and jobs > 2 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(config.threads, jobs), mp_context=context) as pool:
            pretraining = {pool.submit(_in_worker, pretrain_step, config, output, context_length, tower): tower for tower in towers}
            variant_jobs = {}
            for done in as_completed(pretraining):
                tower = pretraining[done]
                pretrained[tower] = done.result()
                for key in config.variants:
                    if VARIANTS[key].tower == tower:
                        variant_jobs[key] = pool.submit(_in_worker, run_variant, key, pretrained[tower][0], config)
            rows = [variant_jobs[key].result() for key in config.variants]
        cpu_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    else:
        for tower in towers:
            pretrained[tower] = pretrain_step(config, output, context_length, tower, log)
        rows = [run_variant(key, pretrained[VARIANTS[key].tower][0], config, log) for key in config.variants]
        cpu_children = 0.0
    results: dict = dict(zip(config.variants, rows))

    train_classes, unseen_classes = splits()
    total = _since(start)
    for tower, (_, summary) in pretrained.items():
        results[pretrain_key(tower)] = summary
    results["run"] = {
        "config": asdict(config),
        "classes": {"train": len(train_classes), "unseen": len(unseen_classes),
                    "held_out_pairs": [f"{c} {s}" for c, s in HELD_OUT]},
        "videos_per_class": {"train": config.train_draws, "test": config.test_draws},
        "context_length": context_length,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {config.threads} process(es) x 1 thread",
        "loadavg_start": load_before,
        "loadavg_end": _loadavg(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": total["wall_s"],
        "cpu_s": round(total["cpu_s"] + cpu_children, 2),  # this process and its workers
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, output / "results.png")
    log(format_table(results))
    return results


def format_table(results: dict) -> str:
    """The printed table: one row per variant, chance levels in the header."""
    keys = [k for k in VARIANTS if k in results]
    any_row = results[keys[0]]
    sup_chance, zs_chance = any_row["chance"]["supervised_top1"], any_row["chance"]["zero_shot_top1"]
    run = results["run"]
    header = (f"| variant | what it tests | supervised top-1 ({run['classes']['train']}-way, chance {sup_chance:.1%}) | motion correct "
              f"| zero-shot top-1 on unseen ({run['classes']['unseen']}-way, chance {zs_chance:.1%}) | train+eval s |")
    lines = [
        f"pre-trained tiny CLIP ({tower}), single-image zero-shot colour x shape: {pretrain['single_image_zero_shot_top1']:.1%} "
        f"(chance {pretrain['single_image_chance']:.1%})"
        for tower in MODEL_NAMES if (pretrain := results.get(pretrain_key(tower)))
    ]
    lines += [header, "|---|---|---|---|---|---|"]
    for key in keys:
        row = results[key]
        zero_shot = "n/a (no text)" if row["zero_shot_top1"] is None else f"{row['zero_shot_top1']:.1%}"
        lines.append(f"| {key} | {row['paper']} | {row['supervised_top1']:.1%} | {row['supervised_motion']:.1%} | {zero_shot} | {row['wall_s']:.0f} |")
    agreement = [results[key]["bf16_top1_agreement"] for key in keys]
    margin = max(results[key]["bf16_largest_flipped_margin"] for key in keys)
    lines.append(f"bf16 weights (as predict --precision bf16) give fp32's top-1 class on {min(agreement):.1%} to "
                 f"{max(agreement):.1%} of the evaluation videos, by variant; where they differ, fp32's top two "
                 f"classes were at most {margin:.3f} apart in probability")
    lines.append(f"total {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU; {run['machine']}; load average {run['loadavg_start']} -> {run['loadavg_end']}")
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in VARIANTS if k in results]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
    supervised = [100 * results[k]["supervised_top1"] for k in keys]
    zero_shot = [100 * (results[k]["zero_shot_top1"] or 0) for k in keys]
    ax.bar(x - 0.2, supervised, 0.4, label="supervised (held-out videos)")
    ax.bar(x + 0.2, zero_shot, 0.4, label="zero-shot (unseen compositions)")
    chance = results[keys[0]]["chance"]
    ax.axhline(100 * chance["supervised_top1"], color="C0", ls=":", label="chance, supervised")
    ax.axhline(100 * chance["zero_shot_top1"], color="C1", ls=":", label="chance, zero-shot")
    for i, k in enumerate(keys):
        if results[k]["zero_shot_top1"] is None:
            ax.text(x[i] + 0.2, 1, "n/a", ha="center", fontsize=8)
    ax.set_xticks(x, keys, rotation=15)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
