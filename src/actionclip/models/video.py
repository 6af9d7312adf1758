"""The video encoder: CLIP's image encoder over frames plus a visual prompt (paper Sec. 3.3, Fig. 2c-g).

- pre-network ``Joint``: all T x N patch tokens of a clip go through the ViT together, with a learnable
  temporal position embedding added to the patch tokens and one class token per video;
- in-network ``Shift``: a parameter-free temporal shift of 1/8 of the channels each way on the patch
  tokens before every block (TSM), then mean over frames;
- post-network ``MeanP``, ``Conv1D``, ``LSTM``, ``Transf``, ``Transf_cls`` on per-frame features.
"""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from actionclip.models.temporal import build_temporal, canonical_prompt_name


def temporal_shift(x: torch.Tensor, num_frames: int, fold_div: int = 8) -> torch.Tensor:
    """Shift 1/fold_div of the patch-token channels one frame back and 1/fold_div one frame forward.

    ``x`` is ``[B*T, 1 + P, C]`` (batch-first, class token first); the class token is not shifted, as in
    the official ``TemporalShift_VIT``. Frames at the ends receive zeros.
    """
    bt, length, channels = x.shape
    cls_token, patches = x[:, :1], x[:, 1:].reshape(bt // num_frames, num_frames, length - 1, channels)
    fold = channels // fold_div
    out = torch.zeros_like(patches)
    out[:, :-1, :, :fold] = patches[:, 1:, :, :fold]
    out[:, 1:, :, fold : 2 * fold] = patches[:, :-1, :, fold : 2 * fold]
    out[:, :, :, 2 * fold :] = patches[:, :, :, 2 * fold :]
    return torch.cat([cls_token, out.reshape(bt, length - 1, channels)], dim=1)


def _shifted_block(block: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    return block(temporal_shift(x, num_frames))


class VideoEncoder(nn.Module):
    """``[B, T, 3, H, W]`` -> ``[B, D]``: one (un-normalised) embedding per video."""

    def __init__(
        self,
        visual: nn.Module,
        visual_prompt: str,
        num_frames: int,
        embed_dim: int,
        temporal_layers: int = 6,
        temporal_heads: int = 8,
        max_frames: int = 77,
        temporal_ln_eps: float = 1e-12,
    ):
        super().__init__()
        self.visual_prompt = canonical_prompt_name(visual_prompt)
        self.num_frames = num_frames
        self.visual = visual
        if self.visual_prompt in ("Joint", "Shift"):
            if not isinstance(visual, VisionTransformer) or not visual.transformer.batch_first:
                raise ValueError(
                    f"the {self.visual_prompt} prompt needs an open_clip VisionTransformer image tower, got {type(visual).__name__}"
                )
        if self.visual_prompt == "Joint":
            width = visual.conv1.out_channels
            # Same scale as CLIP's own spatial position embedding (and the official time_embedding).
            self.time_embedding = nn.Parameter(width**-0.5 * torch.randn(num_frames, width))
        self.temporal = build_temporal(
            self.visual_prompt, embed_dim, num_frames, temporal_layers, temporal_heads, max_frames, temporal_ln_eps
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5:
            raise ValueError(f"expected a video batch [B, T, 3, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        frames = video.flatten(0, 1).to(self.input_dtype)
        if self.visual_prompt == "Joint":
            return self._joint(frames, b, t)
        if self.visual_prompt == "Shift":
            features = self._shifted(frames, t)
        else:
            features = self.visual(frames)
        return self.temporal(features.view(b, t, -1).to(self.temporal_dtype))

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame image features ``[B, T, D]`` before the temporal module (post-network prompts only)."""
        b, t = video.shape[:2]
        return self.visual(video.flatten(0, 1).to(self.input_dtype)).view(b, t, -1)

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the image encoder's weights (bf16 after ``prepare_for_inference``), which frames must match."""
        return next(self.visual.parameters()).dtype

    @property
    def temporal_dtype(self) -> torch.dtype:
        """The dtype of the temporal module's weights, which frame features are cast to: fp32 for MeanP (no
        weights), and fp32 after ``prepare_for_inference`` whatever the image encoder's dtype."""
        return next((p.dtype for p in self.temporal.parameters()), torch.float32)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.visual._pool(x)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def _shifted(self, frames: torch.Tensor, t: int) -> torch.Tensor:
        x = self.visual._embeds(frames)
        # open_clip reads its grad_checkpointing flag only in its own Transformer.forward, which this loop replaces.
        checkpointed = self.visual.transformer.grad_checkpointing and torch.is_grad_enabled()
        for block in self.visual.transformer.resblocks:
            if checkpointed:
                x = checkpoint(_shifted_block, block, x, t, use_reentrant=False)
            else:
                x = _shifted_block(block, x, t)
        return self._project(x)

    def _joint(self, frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """The official ``joint`` path raises NameError (``T`` and ``rearrange`` are undefined there), so this
        follows the paper: patch tokens get spatial + temporal position embeddings, one class token per video."""
        if t != self.time_embedding.shape[0]:
            raise ValueError(f"the Joint prompt was built for T={self.time_embedding.shape[0]} frames, got T={t}")
        visual = self.visual
        x = visual.conv1(frames).flatten(2).transpose(1, 2)  # [B*T, P, C]
        pos = visual.positional_embedding.to(x.dtype)
        x = x + pos[1:]
        x = x.reshape(b, t, x.shape[1], x.shape[2]) + self.time_embedding.to(x.dtype)[None, :, None, :]
        x = x.flatten(1, 2)  # [B, T*P, C]
        cls_token = (visual.class_embedding.to(x.dtype) + pos[0]).expand(b, 1, -1)
        x = visual.ln_pre(torch.cat([cls_token, x], dim=1))
        x = visual.transformer(x)
        return self._project(x)
