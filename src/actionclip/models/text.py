"""CLIP's text encoder, taken out of an open_clip model, and its tokenizer."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from open_clip.transformer import text_global_pool
from torch import nn


class TextEncoder(nn.Module):
    """Token ids ``[N, L]`` -> un-normalised text embeddings ``[N, D]``.

    For OpenAI-style towers (causal mask, end-of-text pooling at the highest token id) the sequence is cut
    to the longest prompt in the batch: positions after the end token cannot influence it through a causal
    mask, and encoding 16 templates x 400 classes gets several times faster than at 77 tokens. Only tokens on
    the CPU are cut here: finding the length of a GPU tensor makes the host wait for the GPU, at every training
    step; training cuts its tokens with :meth:`trim` before moving them.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        if isinstance(clip, open_clip.CLIP):
            self.token_embedding = clip.token_embedding
            self.positional_embedding = clip.positional_embedding
            self.transformer = clip.transformer
            self.ln_final = clip.ln_final
            self.text_projection = clip.text_projection
            self.pool_type = clip.text_pool_type
            self.eos_id = getattr(clip, "text_eos_id", None)
            self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
            self.tower = None
        else:
            self.tower = clip.text

    def trim(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` cut to the longest prompt where that leaves the embeddings as they are (see the class)."""
        if self.tower is None and self.pool_type == "argmax" and self.attn_mask is not None:
            return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        return tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.tower is not None:
            return self.tower(tokens)
        if tokens.device.type == "cpu" and not torch.compiler.is_exporting():  # an exported graph takes any length
            tokens = self.trim(tokens)
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x


def make_tokenizer(clip_config: dict[str, Any]):
    """open_clip's tokenizer for the model: CLIP BPE at the text tower's context length unless the config
    names a Hugging Face tokenizer."""
    text_cfg = clip_config["text_cfg"]
    context_length = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length, **(text_cfg.get("tokenizer_kwargs") or {})
        )
    return open_clip.SimpleTokenizer(context_length=context_length)
