"""Inference precision: weights cast to bf16 or fp16, LayerNorm computed in fp32, embeddings returned in fp32.

On CPUs with native bf16 matrix units (AVX512-BF16, AMX) bf16 *weights* run ViTs about 3x faster than fp32,
while bf16 autocast alone gains nothing at small batches (it re-casts the fp32 weights at every call).
"""
from __future__ import annotations

from pathlib import Path

import torch
from open_clip.transformer import LayerNorm as OpenClipLayerNorm
from open_clip.transformer import LayerNormFp32
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (x86 AVX512-BF16 or AMX-BF16; ARM bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", " bf16"))


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto``: bf16 on GPUs that support it (else fp16) and on CPUs with native bf16, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use bf16 (or fp32)")
    return precision


def cast_for_inference(model: nn.Module, precision: str) -> nn.Module:
    """Cast ``model``'s weights to ``precision`` in place; LayerNorms keep fp32 weights and compute in fp32."""
    dtype = DTYPES[precision]
    model.to(dtype)
    if dtype == torch.float32:
        return model
    for module in model.modules():
        # torch's TransformerEncoderLayer (Transf_cls) calls its norms through a fused path that needs one dtype.
        if isinstance(module, nn.TransformerEncoderLayer):
            continue
        if type(module) in (nn.LayerNorm, OpenClipLayerNorm, LayerNormFp32):
            module.__class__ = LayerNormFp32
            module.float()
        elif type(module).__name__ == "TFLayerNorm":
            module.float()
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    return model.logit_scale.dtype if hasattr(model, "logit_scale") else next(model.parameters()).dtype
