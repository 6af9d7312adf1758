"""The paper's optimisation recipe, as the official ``utils/solver.py`` builds it.

AdamW (betas 0.9/0.98, eps 1e-8) over three parameter groups: the text side including the logit scale at
``lr``, the image encoder at ``lr * visual_ratio`` and the new temporal modules at ``lr * new_ratio``
(5e-6, 5e-6, 5e-5 by default); weight decay 0.2 on every tensor, as the official code does, or the usual
no decay for biases, norms, embeddings and the logit scale (``decay_norm_bias=False``). The learning rate
warms up linearly from 0 over the first ``warmup_epochs`` and then follows a cosine to zero, updated every
step (the official scheduler is stepped every 10 iterations).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from actionclip.host.validation import Flag, Integer, Number


class OptimConfig(BaseModel):
    """The ``optim:`` section of an experiment config."""

    model_config = ConfigDict(extra="forbid")

    lr: Number = 5e-6
    visual_ratio: Number = 1.0
    new_ratio: Number = 10.0
    weight_decay: Number = 0.2
    decay_norm_bias: Flag = True
    betas: tuple[Number, Number] = (0.9, 0.98)
    eps: Number = 1e-8
    epochs: Integer = Field(50, ge=1)
    warmup_epochs: Number = 5.0
    grad_clip: Number | None = None
    accumulation_steps: Integer = Field(1, ge=1)


def parameter_group(name: str) -> str:
    """ "new" for modules that CLIP does not have, "visual" for the image encoder, "text" for the rest."""
    if name.startswith(("video.temporal.", "head.")) or name == "video.time_embedding":
        return "new"
    if name.startswith("video."):
        return "visual"
    return "text"


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or "embedding" in name or name.endswith(("logit_scale", "cls_token", "pos_embed"))


def build_param_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    ratios = {"text": 1.0, "visual": config.visual_ratio, "new": config.new_ratio}
    # Models whose new modules sit among CLIP's (X-CLIP's message layers) list them themselves.
    new_ids = {id(p) for p in model.new_parameters()} if hasattr(model, "new_parameters") else set()
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        kind = "new" if id(param) in new_ids else parameter_group(name)
        decay = config.decay_norm_bias or not _no_decay(name, param)
        group = groups.setdefault(
            (kind, decay),
            {
                "name": kind if decay else f"{kind}_no_decay",
                "params": [],
                "lr": config.lr * ratios[kind],
                "weight_decay": config.weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
    order = [(k, d) for k in ("text", "visual", "new") for d in (True, False)]
    return [groups[key] for key in order if key in groups]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(build_param_groups(model, config), lr=config.lr, betas=config.betas, eps=config.eps)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then a cosine from 1 to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = round(config.warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, total))
