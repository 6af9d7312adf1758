"""Post-network visual prompts: temporal modules applied to per-frame CLIP features ``[B, T, D]``.

Each module maps ``[B, T, D]`` to one embedding per video ``[B, D]`` and is built the way the official
``modules/Visual_Prompt.py`` builds it, with the same parameter names, so official checkpoints load by
stripping their ``module.`` prefix only.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn


class TFLayerNorm(nn.Module):
    """LayerNorm with epsilon inside the square root and eps=1e-12, as the official temporal transformer uses."""

    def __init__(self, width: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in fp32 whatever the input: 1e-12 under a square root is below bf16's resolution.
        dtype = x.dtype
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return (self.weight.float() * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias.float()).to(dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-norm block (sequence-first attention, QuickGELU MLP) with TF-style LayerNorm (``ln_eps``: 1e-12 as
    the official temporal transformer; 1e-5 gives torch's LayerNorm, as in mmaction2's adapter)."""

    def __init__(self, width: int, heads: int, ln_eps: float = 1e-12):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = TFLayerNorm(width, ln_eps)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))])
        )
        self.ln_2 = TFLayerNorm(width, ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, ln_eps: float = 1e-12):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, ln_eps) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


def _init_bert_style(module: nn.Module) -> None:
    # The official init (BERT's): N(0, 0.02) for Linear/Embedding weights, zero biases, LayerNorm at identity.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, TFLayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MeanP(nn.Module):
    """Mean pooling over time (parameter-free)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class Conv1D(nn.Module):
    """A depthwise temporal convolution (kernel 3, no bias) with a residual, then mean over time.

    Initialised as a temporal shift, as the official code does: the first quarter of the channels reads the
    previous frame, the middle half the current frame, the last quarter the next frame. The official
    ``Conv_1D`` reshapes ``[B, T, D]`` with ``view(-1, D, T)`` where a transpose was meant, so it never
    convolves over time; this module convolves over time, as the paper describes (Fig. 2f).
    """

    def __init__(self, width: int):
        super().__init__()
        self.shift = nn.Conv1d(width, width, 3, padding=1, groups=width, bias=False)
        weight = torch.zeros(width, 1, 3)
        weight[: width // 4, 0, 0] = 1.0
        weight[width // 4 : width // 4 + width // 2, 0, 1] = 1.0
        weight[-(width // 4) :, 0, 2] = 1.0
        self.shift.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shift(x.transpose(1, 2)).transpose(1, 2)
        return (y + x).mean(dim=1)


class LSTM(nn.Module):
    """One unidirectional LSTM layer over time with a residual, then mean over time."""

    def __init__(self, width: int):
        super().__init__()
        # PyTorch's default LSTM init, as in the official code (its BERT-style init skips LSTMs).
        self.lstm_visual = nn.LSTM(input_size=width, hidden_size=width, batch_first=True, num_layers=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm_visual(x)
        return (y + x).mean(dim=1)


class Transf(nn.Module):
    """The paper's final visual prompt: a learnable frame-position table, a 6-block CLIP-style transformer over
    the T frame features, a residual around the whole stack, then mean over time."""

    def __init__(self, width: int, layers: int = 6, heads: int = 8, max_frames: int = 77, ln_eps: float = 1e-12):
        super().__init__()
        # The official table has context_length (77) rows; any T up to max_frames works.
        self.frame_position_embeddings = nn.Embedding(max_frames, width)
        self.transformer = TemporalTransformer(width, layers, heads, ln_eps)
        self.apply(_init_bert_style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.frame_position_embeddings.num_embeddings:
            raise ValueError(f"Transf has {self.frame_position_embeddings.num_embeddings} frame positions, got T={t}")
        y = x + self.frame_position_embeddings.weight[:t].unsqueeze(0)
        y = self.transformer(y.transpose(0, 1)).transpose(0, 1)
        return (y + x).mean(dim=1)


def _trunc_normal_fmod(x: torch.Tensor, std: float) -> torch.Tensor:
    # The official initialiser: a normal sample folded into (-2, 2) by fmod, then scaled.
    with torch.no_grad():
        return x.normal_().fmod_(2).mul_(std)


class TAggregate(nn.Module):
    """Class token + learnable positions + PyTorch ``TransformerEncoder`` (8 heads, the layer's defaults)."""

    def __init__(self, clip_length: int, embed_dim: int, n_layers: int = 6, heads: int = 8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=embed_dim, nhead=heads)
        self.transformer_enc = nn.TransformerEncoder(layer, num_layers=n_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, clip_length + 1, embed_dim))
        _trunc_normal_fmod(self.pos_embed, 0.02)
        _trunc_normal_fmod(self.cls_token, 0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _trunc_normal_fmod(module.weight, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"Transf_cls was built for T={self.pos_embed.shape[1] - 1} frames, got T={x.shape[1]}")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.transformer_enc(x.transpose(0, 1))[0]


class TransfCls(nn.Module):
    """``Transf`` with a class token: the class token's output is the video embedding (no mean, no residual)."""

    def __init__(self, width: int, num_frames: int, layers: int = 6, heads: int = 8):
        super().__init__()
        if width % heads:
            raise ValueError(f"Transf_cls needs an embedding width divisible by {heads} heads, got {width}")
        self.transformer = TAggregate(num_frames, width, layers, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(x)


# Their parameters do not depend on a frame's index (mean, a shift between neighbours, a kernel-3 convolution, an
# LSTM), so any frame count runs the computation they were trained with. Joint, Transf and Transf_cls learn one
# position per frame of the trained count: at another count each position would stand for another moment of the clip.
ANY_FRAME_COUNT = ("MeanP", "Shift", "Conv1D", "LSTM")

VISUAL_PROMPTS = ("Joint", "Shift", "MeanP", "Conv1D", "LSTM", "Transf", "Transf_cls")
_ALIASES = {p.lower(): p for p in VISUAL_PROMPTS} | {"conv_1d": "Conv1D", "meanp": "MeanP", "transfcls": "Transf_cls"}


def canonical_prompt_name(name: str) -> str:
    """Accept the paper's names and the official code's spellings (``meanP``, ``Conv_1D``)."""
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown visual prompt {name!r}; choose one of {', '.join(VISUAL_PROMPTS)}") from None


def build_temporal(prompt: str, width: int, num_frames: int, layers: int, heads: int, max_frames: int, ln_eps: float = 1e-12) -> nn.Module:
    """The module that turns ``[B, T, D]`` frame features into ``[B, D]``; Joint and Shift pool by mean."""
    prompt = canonical_prompt_name(prompt)
    if prompt in ("Joint", "Shift", "MeanP"):
        return MeanP()
    if prompt == "Conv1D":
        return Conv1D(width)
    if prompt == "LSTM":
        return LSTM(width)
    if prompt == "Transf":
        if num_frames > max_frames:
            raise ValueError(f"num_frames={num_frames} exceeds Transf's max_frames={max_frames}")
        return Transf(width, layers, heads, max_frames, ln_eps)
    return TransfCls(width, num_frames, layers)


def default_temporal_heads(text_width: int) -> int:
    # The official Transf uses the text transformer's head count (width // 64), at least one.
    return max(1, math.floor(text_width / 64))
