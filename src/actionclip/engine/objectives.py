"""The training objective, chosen in one place for the engine and the demo.

- ``kl``: ActionCLIP's (Eq. 4), the symmetric KL loss over the batch's video-text pairs where every same-label pair
  is a positive, one template per sample; with ``gather_features`` (by default when there are several processes)
  against the pairs of every process, as the official run did over its whole global batch.
- ``ce``: X-CLIP's, cross-entropy of each video's logits against every class text (the first template); the class
  features of a frozen text tower are computed once.
- ``head``: a classifier head's cross-entropy over class indices (Table 1's unimodal baseline).

``ce`` and ``head`` take label smoothing and mixup / cutmix of whole clips (X-CLIP's recipe). ``create_objective``
picks the model's own objective unless told otherwise. An objective is called once per batch as
``objective(forward, videos, labels, seeds=..., generator=...)``, ``forward`` being the model or its DDP wrapper.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actionclip.engine.mixing import mix_clips, smoothed_targets, soft_cross_entropy
from actionclip.host import distributed
from actionclip.host.distributed import DistInfo
from actionclip.losses import kl_contrastive_loss
from actionclip.prompts import PromptTokens

# Each architecture's own objective.


class VideoTextKL:
    """ActionCLIP's objective: KL over the batch's video-text pairs."""

    def __init__(
        self, model: nn.Module, class_names: Sequence[str], templates=None, gather_features: bool | None = None, info: DistInfo = DistInfo()
    ):
        self.prompts = PromptTokens(model.tokenize, class_names, templates)
        self.trim = model.text.trim
        self.gather_features = info.enabled if gather_features is None else gather_features
        self.info = info

    def __call__(
        self,
        forward: Callable,
        videos: torch.Tensor,
        labels: torch.Tensor,
        seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Each sample's template comes from its seed (so a resumed run sees the same texts) or from ``generator``.
        ``labels`` on the CPU spare a GPU's training step a wait for them to come back."""
        if seeds is None:
            tokens = self.prompts.sample(labels.cpu(), generator)
        else:
            tokens = self.prompts.tokens[seeds % len(self.prompts.templates), labels.cpu()]
        tokens = self.trim(tokens).to(videos.device)  # cut here, on the CPU, where it costs the GPU no wait
        labels = labels.to(videos.device, non_blocking=True)
        if not self.gather_features:
            return kl_contrastive_loss(*forward(videos, tokens), labels)
        video_features, text_features, scale = forward(videos, tokens, normalized_features=True)
        video_features = distributed.all_gather_with_grad(video_features, self.info)
        text_features = distributed.all_gather_with_grad(text_features, self.info)
        labels = distributed.all_gather(labels, self.info)
        logits = scale * video_features @ text_features.t()
        return kl_contrastive_loss(logits, logits.t(), labels)


def class_logits(
    forward: Callable, videos: torch.Tensor, tokens: torch.Tensor | None = None, text_features: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits ``[B, C]`` of a video batch against class texts, given as ``tokens`` ``[C, L]`` or as un-normalised
    ``text_features`` ``[C, D]``. X-CLIP's forward returns them; ActionCLIP's returns (per video, per text)."""
    logits = forward(videos, tokens, text_features=text_features)
    return logits[0] if isinstance(logits, tuple) else logits


class ClassCrossEntropy:
    """Cross-entropy over all classes: against every class text (``ce``) or from a classifier head (``head``)."""

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        templates=None,
        kind: str = "ce",
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_switch_prob: float = 0.5,
    ):
        self.kind, self.num_classes = kind, len(class_names)
        self.label_smoothing = label_smoothing
        self.mixup_alpha, self.cutmix_alpha, self.mixup_switch_prob = mixup_alpha, cutmix_alpha, mixup_switch_prob
        self.class_tokens = self.class_features = None
        if kind == "ce":
            tokens = model.text.trim(PromptTokens(model.tokenize, class_names, templates).tokens[0]).to(model.logit_scale.device)
            if model.config.freeze_text:
                with torch.no_grad():
                    self.class_features = model.encode_text(tokens)
            else:
                self.class_tokens = tokens

    def _logits(self, forward: Callable, videos: torch.Tensor) -> torch.Tensor:
        if self.kind == "head":
            return forward(videos)
        return class_logits(forward, videos, self.class_tokens, self.class_features)

    def __call__(
        self,
        forward: Callable,
        videos: torch.Tensor,
        labels: torch.Tensor,
        seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        labels = labels.to(videos.device, non_blocking=True)
        if not (self.label_smoothing or self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            return F.cross_entropy(self._logits(forward, videos), labels)
        targets = smoothed_targets(labels, self.num_classes, self.label_smoothing)
        videos, targets = mix_clips(videos, targets, self.mixup_alpha, self.cutmix_alpha, self.mixup_switch_prob)
        return soft_cross_entropy(self._logits(forward, videos), targets)


def create_objective(
    model: nn.Module,
    class_names: Sequence[str],
    templates=None,
    kind: str | None = None,
    *,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mixup_switch_prob: float = 0.5,
    gather_features: bool | None = None,
    info: DistInfo = DistInfo(),
) -> VideoTextKL | ClassCrossEntropy:
    """The objective ``kind`` (None: the model's own, ``model.objective``) for ``model`` over ``class_names``.

    ``templates`` are the textual prompts (``kl`` draws one per sample, ``ce`` takes the first). ``ce`` must run with
    ``model`` on its training device, where the class features of a frozen text tower are computed."""
    arch = model.config.arch
    kind = kind or model.objective
    if kind not in ("kl", "ce", "head"):
        raise ValueError(f"unknown objective {kind!r}; choose kl, ce or head")
    if (kind == "head") != model.has_class_head:
        raise ValueError(
            f"the {kind} objective does not fit an {arch!r} model: head is for the unimodal classifier, kl and ce for video-text models"
        )
    if kind == "kl":
        if model.video_specific_text:
            raise ValueError("X-CLIP's logits are per video x class, not per video-text pair: train it with ce")
        if label_smoothing or mixup_alpha > 0 or cutmix_alpha > 0:
            raise ValueError("label smoothing, mixup and cutmix apply to the ce and head objectives, not to kl")
        return VideoTextKL(model, class_names, templates, gather_features, info)
    return ClassCrossEntropy(model, class_names, templates, kind, label_smoothing, mixup_alpha, cutmix_alpha, mixup_switch_prob)
