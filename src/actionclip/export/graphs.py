"""A model's towers as ONNX graphs, for ONNX Runtime: ``video.onnx`` (normalised frames ``[B, T, 3, H, W]`` -> the
un-normalised video embedding ``[B, D]``, what ``encode_video`` returns), ``text.onnx`` (token ids ``[N, L]`` -> the
un-normalised text embedding ``[N, D]``, what ``encode_text`` returns) and, for X-CLIP, whose class embeddings depend
on the video, ``prompts.onnx`` (video embedding, visual tokens, class text embeddings -> logits ``[B, C]``).

The graphs are made by ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript): the TorchScript exporter
traces ``nn.MultiheadAttention`` with the frame count baked into its reshapes, so a graph exported at T=8 fails at
T=4; the dynamo exporter keeps the batch, the frame count and the token length symbolic. The batch is always
dynamic, the token length too; the frame count is fixed where the model has one table row per frame (Joint's time
embedding, Transf_cls's positions, X-CLIP's MIT positions; see :func:`fixed_frames_reason`).

Self-attention is traced in the layout ONNX Runtime runs fastest (:func:`attention_for_export`); the int8 video graph
is made from the fp32 one by :mod:`actionclip.export.int8`.
"""

from __future__ import annotations

import contextlib
import logging
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VIDEO_FILE, TEXT_FILE, PROMPTS_FILE = "video.onnx", "text.onnx", "prompts.onnx"


def fixed_frames_reason(model: nn.Module) -> str | None:
    """Why the video graph of ``model`` takes exactly its built frame count, or None when any count up to its
    limit works."""
    if not model.uses_visual_prompt:
        return f"{model.temporal_module} has one position embedding per frame"
    prompt = model.config.visual_prompt
    if prompt == "Joint":
        return "Joint's time embedding has one row per frame"
    if prompt == "Transf_cls":
        return "Transf_cls has one position embedding per frame"
    return None


def check_exportable(model: nn.Module) -> None:
    """ValueError naming what cannot be exported, before anything is written."""
    if not hasattr(model, "class_text_features"):
        raise ValueError(f"a {model.config.arch!r} model has a fixed set of classes and no text tower; export exports video-text models")
    if model.config.clip["text_cfg"].get("hf_tokenizer_name"):
        raise ValueError(
            "export writes CLIP's BPE tokenizer; this model's text tower uses the Hugging Face tokenizer "
            f"{model.config.clip['text_cfg']['hf_tokenizer_name']!r}"
        )
    if model.text.tower is not None:
        raise ValueError(
            f"export needs an OpenAI-style CLIP text tower (open_clip.CLIP); this model's text tower is {type(model.text.tower).__name__}"
        )


class VideoGraph(nn.Module):
    """Frames -> ``encode_video`` (ActionCLIP), or -> (video embedding, visual tokens ``[B, P, D]``) (X-CLIP)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        if self.model.video_specific_text:  # its text graph needs the video's visual tokens
            features, tokens = self.model.video(frames)
            return features.float(), tokens.float()
        return self.model.encode_video(frames)


class TextGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.text = model.text

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens).float()


class XCLIPPromptGraph(nn.Module):
    """X-CLIP's video-specific prompts and logits: ``(video embedding [B, D], visual tokens [B, P, D], class text
    embeddings [C, D])`` -> logits ``[B, C]`` at X-CLIP's learned scale."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, video_features: torch.Tensor, visual_tokens: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.model._logits(video_features, visual_tokens, text_features)


def _self_attention(
    self: nn.MultiheadAttention,
    query,
    key,
    value,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    average_attn_weights=True,
    is_causal=False,
):
    """``nn.MultiheadAttention.forward`` as exported, for a self-attention with at most a 2-D additive mask (CLIP's
    towers, the temporal transformer, X-CLIP's message attention); any other call goes to the module's own forward."""
    if (
        query is not key
        or key is not value
        or key_padding_mask is not None
        or need_weights
        or is_causal
        or (self.training and self.dropout > 0)
        or (attn_mask is not None and (attn_mask.dim() != 2 or not attn_mask.is_floating_point()))
    ):
        return nn.MultiheadAttention.forward(
            self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )
    x = query if self.batch_first else query.transpose(0, 1)
    batch, length, width = x.shape
    q, k, v = (
        F.linear(x, self.export_in_proj_weight, self.export_in_proj_bias)
        .view(batch, length, 3, self.num_heads, self.head_dim)
        .permute(2, 0, 3, 1, 4)
        .unbind(0)
    )
    scores = q @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores + attn_mask
    out = self.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width))
    return (out if self.batch_first else out.transpose(0, 1)), None


@contextlib.contextmanager
def attention_for_export(module: nn.Module):
    """For the block, every ``nn.MultiheadAttention`` of ``module`` with one packed input projection computes its
    self-attention batch-first, with ``1/sqrt(head size)`` folded into the query projection's weights.

    Why: traced as it is, ``nn.MultiheadAttention`` in a batch-first tower makes eight transposes per layer (the
    tokens sequence-first and back, q, k and v each, the heads, k for ``q @ k^T``), then scales q and k apart; ONNX
    Runtime runs each as a pass over memory. Here there are three: the heads split (q, k and v at once), k for
    ``q @ k^T``, the heads joined (the speed it buys: docs/performance.md). The function is the same to float
    rounding; the weights exported are ``in_proj_weight`` and ``in_proj_bias`` with their query rows scaled, and the
    module is as before after the block."""
    attentions = [
        m
        for m in module.modules()
        if isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim and m.bias_k is None and not m.add_zero_attn
    ]
    for attention in attentions:
        scale = torch.ones(3 * attention.embed_dim, device=attention.in_proj_weight.device)
        scale[: attention.embed_dim] = attention.head_dim**-0.5
        bias = attention.in_proj_bias
        attention.register_buffer("export_in_proj_weight", attention.in_proj_weight.detach() * scale[:, None], persistent=False)
        attention.register_buffer("export_in_proj_bias", None if bias is None else bias.detach() * scale, persistent=False)
        attention.forward = types.MethodType(_self_attention, attention)
    try:
        yield
    finally:
        for attention in attentions:
            del attention.forward, attention.export_in_proj_weight, attention.export_in_proj_bias


@contextlib.contextmanager
def _errors_only(*loggers: str):
    """Only errors from these loggers for the block: the exporter's notes on what it did or skipped are not the
    user's business."""
    loggers = [logging.getLogger(name) for name in loggers]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(
    module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic_shapes: dict, metadata: dict
) -> None:
    with warnings.catch_warnings(), _errors_only("onnxscript", "torch.onnx"), attention_for_export(module):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            verbose=False,
            external_data=False,
        )
        program.model.metadata_props.update(metadata)
        program.save(str(path), external_data=False)


def _image_size(model: nn.Module) -> int:
    size = model.config.clip["vision_cfg"]["image_size"]
    return size[0] if isinstance(size, (list, tuple)) else size


def _example_video(model: nn.Module, frames: int) -> torch.Tensor:
    # Two videos: torch.export specialises a dimension of size 1.
    return torch.randn(2, frames, 3, _image_size(model), _image_size(model))


_BATCH = torch.export.Dim("batch", min=1, max=4096)


@torch.no_grad()
def export_video_graph(model: nn.Module, path: str | Path, frames: int | None = None, metadata: dict | None = None) -> dict:
    """Write ``model``'s video graph (fp32) to ``path`` with ``metadata`` (the graph's metadata properties); returns
    the frame count it was made with and whether another count works (``dynamic_frames``, ``max_frames``,
    ``fixed_frames_reason``)."""
    check_exportable(model)
    model = model.float().eval()
    reason = fixed_frames_reason(model)
    frames = frames or model.config.num_frames
    if reason and frames != model.config.num_frames:
        raise ValueError(f"this model takes exactly {model.config.num_frames} frames ({reason}), not {frames}")
    frame_dim = {} if reason else {1: torch.export.Dim("frames", min=2, max=model.config.max_frames)}
    outputs = ["video_features", "visual_tokens"] if model.video_specific_text else ["video_features"]
    shapes = {"frames": {0: _BATCH, **frame_dim}}
    _export(VideoGraph(model), (_example_video(model, frames),), Path(path), ["frames"], outputs, shapes, metadata or {})
    return {
        "num_frames": frames,
        "dynamic_frames": reason is None,
        "fixed_frames_reason": reason,
        "max_frames": model.config.max_frames if reason is None else frames,
    }


@torch.no_grad()
def export_text_graph(model: nn.Module, path: str | Path, metadata: dict | None = None) -> int:
    """Write ``model``'s text graph (fp32) to ``path`` with ``metadata``; returns its context length (the longest
    token input)."""
    check_exportable(model)
    model = model.float().eval()
    context = model.text.positional_embedding.shape[0]
    # A length below the context's, so that the length stays a free dimension (the runtime cuts tokens as TextEncoder).
    tokens = model.tokenize(["a video of a person", "two"])[:, : min(16, context - 1)]
    _export(
        TextGraph(model),
        (tokens,),
        Path(path),
        ["tokens"],
        ["text_features"],
        {"tokens": {0: torch.export.Dim("texts", min=1, max=1 << 20), 1: torch.export.Dim("length", min=2, max=context)}},
        metadata or {},
    )
    return context


@torch.no_grad()
def export_prompt_graph(model: nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """Write X-CLIP's prompt graph (:class:`XCLIPPromptGraph`, fp32) to ``path`` with ``metadata``."""
    model = model.float().eval()
    features, visual_tokens = model.video(_example_video(model, model.config.num_frames))
    classes = torch.randn(3, features.shape[1])
    _export(
        XCLIPPromptGraph(model),
        (features, visual_tokens, classes),
        Path(path),
        ["video_features", "visual_tokens", "text_features"],
        ["logits"],
        {
            "video_features": {0: _BATCH},
            "visual_tokens": {0: _BATCH},
            "text_features": {0: torch.export.Dim("classes", min=2, max=1 << 20)},
        },
        metadata or {},
    )


def export_graphs(model: nn.Module, directory: str | Path, frames: int | None = None, metadata: dict | None = None) -> dict:
    """Write the fp32 graphs of ``model`` (fp32 weights, in eval mode) into ``directory``, each with ``metadata``;
    returns what the export config records of them: the files, the frame count and whether it is dynamic, the text
    context length."""
    check_exportable(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = export_video_graph(model, directory / VIDEO_FILE, frames, metadata)
    info["context_length"] = export_text_graph(model, directory / TEXT_FILE, metadata)
    info["files"] = {"video": VIDEO_FILE, "text": TEXT_FILE}
    if model.video_specific_text:
        export_prompt_graph(model, directory / PROMPTS_FILE, metadata)
        info["files"]["prompts"] = PROMPTS_FILE
    return info
