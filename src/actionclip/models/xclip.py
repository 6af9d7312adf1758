"""X-CLIP (Ni et al., 2022): CLIP expanded to video with three new modules.

- cross-frame communication transformer: CLIP's image encoder where, in every block, each frame's class token
  becomes a message token, the T message tokens of a video attend to each other, and each frame attends over its
  own tokens plus its message token (dropped again before the MLP);
- multi-frame integration transformer (MIT): a small transformer over the T projected frame features, with a
  learnable temporal position embedding and a residual, then the mean over T;
- video-specific prompt generator: the class text embeddings cross-attend to the video's frame-averaged patch
  tokens; the result, scaled by a learnable per-channel alpha, is added to the text embeddings, so every video
  gets its own class embeddings and the logits are per video x class.

Module and parameter names follow the original code (microsoft/VideoX, ``X-CLIP/models``), so its checkpoints load
with prefixes changed (and the prompt MLP's layers named as CLIP's); the arithmetic is that of ``transformers``'
``XCLIPModel``, checked in the tests.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from actionclip.models.actionclip import ActionCLIPConfig, fp32_similarities
from actionclip.models.backbone import build_clip
from actionclip.models.text import TextEncoder, make_tokenizer
from actionclip.prompts import clean_class_name, fill_templates, resolve_templates

# Parameters that X-CLIP adds to CLIP; its recipe trains them at 10x the learning rate of the pretrained ones.
_NEW_PREFIXES = ("video.mit.", "video.prompts_visual_", "prompts_generator.")


def is_new_parameter(name: str) -> bool:
    """Whether a parameter name of :class:`XCLIP` belongs to a module X-CLIP adds (message layers, MIT, prompts)."""
    return name.startswith(_NEW_PREFIXES) or ".message_" in name


def _init_trunc_normal(module: nn.Module) -> None:
    # The original init of the MIT and the prompt generator (timm's trunc_normal_, std 0.02, zero biases).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CrossFrameBlock(nn.Module):
    """A CLIP image block (its ``ln_1``, ``attn``, ``ln_2``, ``mlp`` reused) with cross-frame communication.

    The message layers are new and keep PyTorch's default init, as in the original (its ``init_weights`` is never
    called). Input and output ``[B*T, 1 + P, C]``, frames of a video consecutive.
    """

    def __init__(self, block: ResidualAttentionBlock):
        super().__init__()
        if not isinstance(block, ResidualAttentionBlock) or not block.attn.batch_first:
            raise ValueError(f"cross-frame attention needs open_clip's batch-first ResidualAttentionBlock, got {type(block).__name__}")
        width = block.attn.embed_dim
        self.message_fc = nn.Linear(width, width)
        self.message_ln = LayerNorm(width)
        self.message_attn = nn.MultiheadAttention(width, block.attn.num_heads, batch_first=True)
        self.ln_1, self.attn, self.ls_1 = block.ln_1, block.attn, block.ls_1
        self.ln_2, self.mlp, self.ls_2 = block.ln_2, block.mlp, block.ls_2

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, length, width = x.shape
        message = self.message_fc(x[:, 0]).view(bt // num_frames, num_frames, width)
        h = self.message_ln(message)
        message = message + self.message_attn(h, h, h, need_weights=False)[0]
        x = torch.cat([x, message.reshape(bt, 1, width)], dim=1)
        h = self.ln_1(x)
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False)[0])
        x = x[:, :length]  # the message token only takes part in the attention
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class MultiframeIntegrationTransformer(nn.Module):
    """``[B, T, D]`` projected frame features -> ``[B, D]``: transformer + residual, then the mean over T."""

    def __init__(self, num_frames: int, width: int, layers: int, heads: int, act_layer: type[nn.Module], mlp_ratio: float = 4.0):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(1, num_frames, width))
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp_ratio, act_layer=act_layer) for _ in range(layers)])
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        self.apply(_init_trunc_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.positional_embedding.shape[1]:
            raise ValueError(f"X-CLIP was built for T={self.positional_embedding.shape[1]} frames, got T={x.shape[1]}")
        return (x + self.resblocks(x + self.positional_embedding)).mean(dim=1)


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``[B, N, C]`` over a context ``[B, M, C]``; bias-free q/k/v as in X-CLIP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q_proj(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.k_proj(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.v_proj(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class PromptGeneratorLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.cross_attn = CrossAttention(width, heads)
        self.norm3 = nn.LayerNorm(width)  # the original's name (it has no norm2)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))])
        )

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm3(text))


class VideoSpecificPrompt(nn.Module):
    """Class text embeddings ``[B, C, D]`` and visual tokens ``[B, P, D]`` -> the prompts ``[B, C, D]`` that X-CLIP
    adds to the text embeddings, scaled per channel by ``alpha``."""

    def __init__(self, width: int, layers: int, heads: int, alpha: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.decoder = nn.ModuleList([PromptGeneratorLayer(width, heads) for _ in range(layers)])
        self.alpha = nn.Parameter(torch.full((width,), float(alpha)))
        self.apply(_init_trunc_normal)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        visual = self.norm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha * text


class XCLIPVideoEncoder(nn.Module):
    """``[B, T, 3, H, W]`` -> video features ``[B, D]`` and the prompt generator's visual tokens ``[B, P, D]``.

    ``visual`` is an open_clip ViT whose blocks are replaced by :class:`CrossFrameBlock`s; its own ``forward`` is
    not used (the blocks need the frame count, and X-CLIP also needs the patch tokens before ``ln_post``).
    """

    def __init__(
        self, visual: nn.Module, num_frames: int, embed_dim: int, mit_layers: int, mit_heads: int, act_layer, mit_mlp_ratio: float = 4.0
    ):
        super().__init__()
        if not isinstance(visual, VisionTransformer) or not visual.transformer.batch_first:
            raise ValueError(f"X-CLIP needs an open_clip VisionTransformer image tower, got {type(visual).__name__}")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.proj is None:
            raise ValueError("X-CLIP needs a ViT pooled by its class token and projected by `proj` (CLIP's own ViTs)")
        visual.transformer.resblocks = nn.ModuleList([CrossFrameBlock(block) for block in visual.transformer.resblocks])
        self.visual = visual
        self.mit = MultiframeIntegrationTransformer(num_frames, embed_dim, mit_layers, mit_heads, act_layer, mit_mlp_ratio)
        width = visual.conv1.out_channels
        self.prompts_visual_ln = LayerNorm(width)
        # Unit-variance init as in the original; the prompt generator layer-normalises its input anyway.
        self.prompts_visual_proj = nn.Parameter(torch.randn(width, embed_dim))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.ndim != 5:
            raise ValueError(f"expected a video batch [B, T, 3, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        x = self.visual._embeds(video.flatten(0, 1).to(self.visual.conv1.weight.dtype))  # patch embedding, class token, positions, ln_pre
        # open_clip reads its grad_checkpointing flag only in its own Transformer.forward, which this loop replaces.
        checkpointed = self.visual.transformer.grad_checkpointing and torch.is_grad_enabled()
        for block in self.visual.transformer.resblocks:
            x = checkpoint(block, x, t, use_reentrant=False) if checkpointed else block(x, t)
        frame_features = self.visual.ln_post(x[:, 0]) @ self.visual.proj
        video_features = self.mit(frame_features.view(b, t, -1))
        tokens = self.prompts_visual_ln(x[:, 1:]) @ self.prompts_visual_proj  # patch tokens, without ln_post
        return video_features, tokens.view(b, t, tokens.shape[1], -1).mean(dim=1)


class XCLIP(nn.Module):
    """X-CLIP around an open_clip CLIP: image tower -> :class:`XCLIPVideoEncoder`, CLIP's text tower as is."""

    default_templates = "label_only"  # X-CLIP trains and tests on the label alone
    objective = "ce"  # cross-entropy over all class texts: its logits are per video x class
    has_class_head = False
    has_text_tower = True
    video_specific_text = True  # its prompts generator adds each video's visual tokens to the text features
    uses_visual_prompt = False  # its temporal modelling is its own: cross-frame attention and the MIT
    temporal_module = "X-CLIP's MIT"
    any_frame_count = False  # its cross-frame attention and MIT learn a position per frame

    def __init__(self, config: ActionCLIPConfig, clip: nn.Module | None = None):
        super().__init__()
        clip = build_clip(config.clip) if clip is None else clip
        self.config = config
        embed_dim = config.clip["embed_dim"]
        act_layer = QuickGELU if config.clip.get("quick_gelu", False) else nn.GELU
        mit_heads = config.mit_heads or max(1, embed_dim // 64)
        self.video = XCLIPVideoEncoder(
            clip.visual, config.num_frames, embed_dim, config.mit_layers, mit_heads, act_layer, config.mit_mlp_ratio
        )
        self.text = TextEncoder(clip)
        prompt_heads = config.prompt_heads or max(1, embed_dim // 64)
        self.prompts_generator = VideoSpecificPrompt(embed_dim, config.prompt_layers, prompt_heads, config.prompt_alpha)
        self.logit_scale = clip.logit_scale
        self.tokenizer = make_tokenizer(config.clip)
        # Freezing a tower freezes its pretrained weights only: the message layers are new and always trained.
        for name, parameter in self.video.visual.named_parameters():
            parameter.requires_grad_(not config.freeze_vision or ".message_" in name)
        self.text.requires_grad_(not config.freeze_text)

    def new_parameters(self) -> list[nn.Parameter]:
        """Message layers, MIT, prompt generator and its visual projection: X-CLIP's 10x learning-rate group."""
        return [p for name, p in self.named_parameters() if is_new_parameter(name)]

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Everything initialised from CLIP (image and text towers, logit scale)."""
        return [p for name, p in self.named_parameters() if not is_new_parameter(name)]

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> ``[B, D]``, un-normalised (the MIT's output), in fp32 whatever the weights."""
        return self.video(video)[0].float()

    def encode_text(self, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """``[N, L]`` token ids -> ``[N, D]``, un-normalised, before the video-specific prompts, in fp32."""
        tokens = tokens.to(self.logit_scale.device)
        return torch.cat([self.text(chunk) for chunk in tokens.split(batch_size)]).float()

    def tokenize(self, texts: Sequence[str] | str) -> torch.Tensor:
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts))

    def logits_from_text_features(self, video: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` from a video batch and un-normalised class text features ``[C, D]`` (e.g. cached
        ``encode_text`` output for a frozen text tower)."""
        return self._logits(*self.video(video), text_features)

    def logits(self, video: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits per video x class ``[B, C]`` for class token ids ``[C, L]`` (``XCLIPModel``'s ``logits_per_video``)."""
        return self.logits_from_text_features(video, self.encode_text(tokens))

    def forward(self, video: torch.Tensor, tokens: torch.Tensor | None = None, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, C]`` from class tokens, or from cached class ``text_features`` (a frozen text encoder)."""
        if (tokens is None) == (text_features is None):
            raise ValueError("give exactly one of tokens and text_features")
        return self.logits(video, tokens) if tokens is not None else self.logits_from_text_features(video, text_features)

    def _logits(self, video_features: torch.Tensor, visual_tokens: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        text = text_features.to(video_features.dtype).unsqueeze(0).expand(video_features.shape[0], -1, -1)
        text = text + self.prompts_generator(text, visual_tokens)
        # Similarities and the temperature in fp32 even when the weights are bf16 or autocast is on.
        video_features = F.normalize(video_features.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        with fp32_similarities(video_features.device):
            return self.logit_scale.float().exp() * torch.einsum("bd,bcd->bc", video_features, text)

    @torch.no_grad()
    def class_text_features(self, labels: Sequence[str], templates=None, clean_labels: bool = False) -> torch.Tensor:
        """Un-normalised text features ``[K, C, D]`` of every template x label; ``templates`` None: the label alone
        ("label_only"), as X-CLIP trains and tests."""
        templates = resolve_templates(self.default_templates if templates is None else templates)
        labels = [clean_class_name(label) for label in labels] if clean_labels else list(labels)
        features = self.encode_text(self.tokenize(fill_templates(templates, labels)))
        return features.view(len(templates), len(labels), -1)

    @torch.no_grad()
    def classify(self, video: torch.Tensor, labels: Sequence[str], templates=None, clean_labels: bool = False) -> torch.Tensor:
        """Class probabilities ``[B, C]``: the softmax of the logits, averaged over templates when there are several
        (as ActionCLIP's default ensemble). ``templates`` as in :meth:`class_text_features`."""
        was_training = self.training
        self.eval()
        try:
            text_features = self.class_text_features(labels, templates, clean_labels)
            return self.video_probabilities(video.to(self.logit_scale.device), text_features)
        finally:
            self.train(was_training)

    def video_probabilities(self, video: torch.Tensor, text_features: torch.Tensor, ensemble: str = "softmax") -> torch.Tensor:
        """``[B, C]``: the softmax of the logits against ``class_text_features`` output ``[K, C, D]``, averaged over
        the K templates (the video is encoded once). Only the softmax ensemble exists for X-CLIP."""
        if ensemble != "softmax":
            raise ValueError("X-CLIP combines templates by averaging probabilities (ensemble='softmax')")
        video_features, visual_tokens = self.video(video)
        probabilities = [self._logits(video_features, visual_tokens, features).softmax(dim=-1) for features in text_features]
        return torch.stack(probabilities).mean(dim=0)
