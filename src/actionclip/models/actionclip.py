"""ActionCLIP (video encoder + text encoder + cosine similarity with a learnable temperature) and the
unimodal baseline of Table 1 (the same video encoder with a linear head)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actionclip.models.backbone import build_clip, build_vision_tower
from actionclip.models.temporal import ANY_FRAME_COUNT, canonical_prompt_name, default_temporal_heads
from actionclip.models.text import TextEncoder, make_tokenizer
from actionclip.models.video import VideoEncoder
from actionclip.prompts import clean_class_name, fill_templates, resolve_templates

# The official test arithmetic scores with a fixed scale of 100, not the learned temperature.
TEST_LOGIT_SCALE = 100.0


def fp32_similarities(device: torch.device):
    """Autocast off on ``device``, for similarities times the logit scale: in bf16 logits near 25 are rounded to
    steps of 0.125, and near-tie top-1s among 400 classes flip."""
    return torch.autocast(device.type, enabled=False) if torch.amp.is_autocast_available(device.type) else contextlib.nullcontext()


@dataclass
class ActionCLIPConfig:
    """Everything needed to rebuild a model; saved as JSON beside the weights."""

    clip: dict[str, Any]  # open_clip model config: embed_dim, vision_cfg, text_cfg, quick_gelu, ...
    visual_prompt: str = "Transf"
    num_frames: int = 8
    arch: str = "actionclip"  # or "unimodal", "xclip"
    model_name: str | None = None
    pretrained: str | None = None  # where the CLIP weights came from (provenance only)
    temporal_layers: int = 6
    temporal_heads: int | None = None  # None: text width // 64, as the official Transf
    max_frames: int = 77  # rows of Transf's frame-position table (the official table has 77)
    temporal_ln_eps: float = 1e-12  # Transf's LayerNorm epsilon: 1e-12 official, 1e-5 mmaction2's adapter
    num_classes: int | None = None  # unimodal head only
    freeze_vision: bool = False
    freeze_text: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # X-CLIP only (arch="xclip"); the defaults are those of the published X-CLIP models. Heads None: embed_dim // 64.
    mit_layers: int = 1
    mit_heads: int | None = None
    mit_mlp_ratio: float = 4.0  # the MIT's MLP width over embed_dim (transformers: mit_intermediate_size / mit_hidden_size)
    prompt_layers: int = 2
    prompt_heads: int | None = None
    prompt_alpha: float = 0.1
    # What the source of an imported model used at test time, so that its scores are the source's (None: ours).
    templates: str | list[str] | None = None  # classify/predict/eval's templates when none are given
    test_logit_scale: float | None = None  # the scale of test-time cosine similarities (None: 100, the official)
    normalization: str | None = None  # input mean/std, "clip" or "imagenet" (None: clip)

    def __post_init__(self):
        self.visual_prompt = canonical_prompt_name(self.visual_prompt)
        if self.temporal_heads is None:
            self.temporal_heads = default_temporal_heads(self.clip["text_cfg"].get("width", 512))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _video_encoder(config: ActionCLIPConfig, visual: nn.Module) -> VideoEncoder:
    return VideoEncoder(
        visual,
        config.visual_prompt,
        config.num_frames,
        config.clip["embed_dim"],
        config.temporal_layers,
        config.temporal_heads,
        config.max_frames,
        config.temporal_ln_eps,
    )


def _check_normalised(video: torch.Tensor) -> None:
    # The datasets' uint8 frames cast to float would be scored as they are, silently wrong.
    if video.dtype == torch.uint8:
        raise TypeError("uint8 frames: normalise them first (actionclip.data.normalize or frames_to_device)")


class ActionCLIP(nn.Module):
    # What the rest of the library asks of an architecture, instead of comparing its name.
    objective = "kl"  # the training objective of its paper: KL over in-batch video-text pairs
    has_class_head = False  # a fixed set of classes (a linear head) rather than text
    has_text_tower = True
    video_specific_text = False  # text features that depend on each video (X-CLIP's prompts)
    uses_visual_prompt = True  # config.visual_prompt is its temporal module

    @property
    def temporal_module(self) -> str:
        return f"its {self.config.visual_prompt} prompt"

    @property
    def any_frame_count(self) -> bool:
        """Whether it computes correctly on another number of frames than it was trained on."""
        return self.config.visual_prompt in ANY_FRAME_COUNT

    def __init__(self, config: ActionCLIPConfig, clip: nn.Module | None = None):
        super().__init__()
        clip = build_clip(config.clip) if clip is None else clip
        self.config = config
        self.video = _video_encoder(config, clip.visual)
        self.text = TextEncoder(clip)
        self.logit_scale = clip.logit_scale
        self.tokenizer = make_tokenizer(config.clip)
        self.video.visual.requires_grad_(not config.freeze_vision)
        self.text.requires_grad_(not config.freeze_text)

    @property
    def default_templates(self):
        """The templates when none are given: those of the source of an imported model, else the official 16."""
        return self.config.templates or "actionclip"

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> ``[B, D]``, un-normalised (the temporal module's output), in fp32 whatever the
        weights' dtype (see ``actionclip.models.precision``)."""
        _check_normalised(video)
        return self.video(video).float()

    def encode_text(self, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """``[N, L]`` token ids -> ``[N, D]``, un-normalised, in fp32; encoded in chunks of ``batch_size``."""
        tokens = tokens.to(self.logit_scale.device)
        return torch.cat([self.text(chunk) for chunk in tokens.split(batch_size)]).float()

    def tokenize(self, texts: Sequence[str] | str) -> torch.Tensor:
        """CLIP tokens ``[N, context_length]`` (77 for the standard text tower)."""
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts))

    def forward(
        self,
        video: torch.Tensor,
        tokens: torch.Tensor | None = None,
        *,
        text_features: torch.Tensor | None = None,
        normalized_features: bool = False,
    ):
        """Training logits: cosine similarities times the learned scale, ``[B, N]`` and ``[N, B]``, against the texts
        of ``tokens`` ``[N, L]`` or their un-normalised ``text_features`` ``[N, D]`` (cached from a frozen text tower).

        ``normalized_features=True`` returns ``(video_features, text_features, scale)`` instead, for losses
        that contrast against features gathered from other processes.
        """
        if (tokens is None) == (text_features is None):
            raise ValueError("give exactly one of tokens and text_features")
        video_features = F.normalize(self.encode_video(video), dim=-1)
        text_features = F.normalize((self.encode_text(tokens) if text_features is None else text_features).float(), dim=-1)
        scale = self.logit_scale.float().exp()
        if normalized_features:
            return video_features, text_features, scale
        with fp32_similarities(video_features.device):
            return scale * video_features @ text_features.t(), scale * text_features @ video_features.t()

    @torch.no_grad()
    def class_text_features(self, labels: Sequence[str], templates=None, clean_labels: bool = False) -> torch.Tensor:
        """Normalised text features of every template x label, ``[K, C, D]``."""
        templates = resolve_templates(self.default_templates if templates is None else templates)
        labels = [clean_class_name(label) for label in labels] if clean_labels else list(labels)
        features = self.encode_text(self.tokenize(fill_templates(templates, labels)))
        return F.normalize(features, dim=-1).view(len(templates), len(labels), -1)

    @torch.no_grad()
    def classify(
        self, video: torch.Tensor, labels: Sequence[str], templates=None, ensemble: str = "softmax", clean_labels: bool = False
    ) -> torch.Tensor:
        """Zero-shot class probabilities ``[B, C]`` for any label list, with the official test arithmetic.

        ``templates``: None (the official 16), "label_only", a file of templates, or a list.
        ``ensemble="softmax"`` (the official default): softmax over classes per template at scale 100, then
        the mean over templates; ``"embedding"``: the mean of normalised text features over templates.
        """
        was_training = self.training
        self.eval()
        try:
            text_features = self.class_text_features(labels, templates, clean_labels)
            return self.video_probabilities(video.to(self.logit_scale.device), text_features, ensemble)
        finally:
            self.train(was_training)

    def video_probabilities(self, video: torch.Tensor, text_features: torch.Tensor, ensemble: str = "softmax") -> torch.Tensor:
        """``[B, C]`` probabilities of a video batch against ``class_text_features`` output ``[K, C, D]``."""
        return ensemble_probabilities(
            F.normalize(self.encode_video(video), dim=-1), text_features, ensemble, self.config.test_logit_scale or TEST_LOGIT_SCALE
        )


def ensemble_probabilities(
    video_features: torch.Tensor, text_features: torch.Tensor, ensemble: str = "softmax", scale: float = TEST_LOGIT_SCALE
) -> torch.Tensor:
    """Probabilities ``[B, C]`` from normalised video features ``[B, D]`` and text features ``[K, C, D]``, in fp32;
    ``scale`` multiplies the cosine similarities."""
    video_features, text_features = video_features.float(), text_features.float()
    with fp32_similarities(video_features.device):
        if ensemble == "softmax":
            similarity = scale * torch.einsum("bd,kcd->bkc", video_features, text_features)
            return similarity.softmax(dim=-1).mean(dim=1)
        if ensemble == "embedding":
            class_features = F.normalize(text_features.mean(dim=0), dim=-1)
            return (scale * video_features @ class_features.t()).softmax(dim=-1)
    raise ValueError(f"ensemble must be 'softmax' or 'embedding', got {ensemble!r}")


class UnimodalClassifier(nn.Module):
    """Table 1's baseline: ActionCLIP's video encoder, then a linear layer trained with cross-entropy."""

    objective = "head"
    has_class_head = True
    has_text_tower = False
    video_specific_text = False
    uses_visual_prompt = True
    temporal_module = ActionCLIP.temporal_module
    any_frame_count = ActionCLIP.any_frame_count

    def __init__(self, config: ActionCLIPConfig, clip: nn.Module | None = None):
        super().__init__()
        if not config.num_classes:
            raise ValueError("the unimodal classifier needs num_classes")
        self.config = config
        self.video = _video_encoder(config, build_vision_tower(config.clip) if clip is None else clip.visual)
        self.head = nn.Linear(config.clip["embed_dim"], config.num_classes)
        self.video.visual.requires_grad_(not config.freeze_vision)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> ``[B, D]`` in fp32 whatever the weights' dtype (see ``actionclip.models.precision``)."""
        _check_normalised(video)
        return self.video(video).float()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_video(video).to(self.head.weight.dtype)).float()

    def video_probabilities(self, video: torch.Tensor, text_features=None, ensemble: str = "softmax") -> torch.Tensor:
        """Softmax over the head's classes (the class texts play no part)."""
        return self(video).softmax(dim=-1)
