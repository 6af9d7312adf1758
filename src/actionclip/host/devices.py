"""Devices and what they compute natively: the precision ``auto`` resolves to."""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (x86 AVX512-BF16 or AMX-BF16; ARM bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", " bf16"))


def cuda_has_native_bf16(device: str | torch.device) -> bool:
    """Whether the GPU ``device`` (not the current one) computes bf16 natively (Ampere and later). Plain
    ``torch.cuda.is_bf16_supported()`` also says yes for V100 and T4, which only emulate bf16, far slower than fp16."""
    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(torch.device(device)):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto``: bf16 on GPUs with native bf16 (else fp16) and on CPUs with native bf16, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_has_native_bf16(device) else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use bf16 (or fp32)")
    return precision
