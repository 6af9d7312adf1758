"""``actionclip benchmark``: Table 7 of the paper (parameters, GFLOPs, throughput) for any configuration.

Models are built with random weights (nothing is downloaded) in the OpenAI architecture (QuickGELU, which changes
neither the counts nor the shapes, only the activation's speed). Reported:

- ``params``: parameters of the whole model (video encoder, temporal module, text encoder) except the text
  tower's token-embedding table (49408 x width, 25.3 M for ViT-B), a lookup that does no arithmetic. The paper does
  not say what it counts; leaving the table out is what brings both counts near Table 7 (144.9 M for ViT-B/32 and
  143.3 M for ViT-B/16 with Transf, 8 frames; the paper has 144.1 M and 141.7 M, so it differs in some detail);
  ``params_all`` includes the table (170.2 M / 168.6 M); ``params_video`` and ``params_text`` are the two
  encoders' shares of it (X-CLIP's prompt generator belongs to neither).
- ``gflops_per_video``: multiply-accumulates (the paper's and fvcore's "FLOPs") of the video side for one video of
  T frames: the image encoder over the T frames and the temporal module (for X-CLIP: the cross-frame ViT, the MIT and
  the projection of the patch tokens for its prompt generator). Counted by ``torch.utils.flop_counter``
  ``FlopCounterMode``, whose multiply-add counts 2, hence halved; like fvcore it counts matmuls, linear layers,
  convolutions and attention, not normalisations or activations. Text features are computed once per label set, so
  the text encoder is not part of a video's cost. Counting runs on the ``meta`` device: no memory, no arithmetic.
- ``videos_per_s``: the same video side (``encode_video``) on random input of ``batch_size`` videos, under
  ``torch.inference_mode``, after warm-up iterations; ``cpu_s_per_video``: the process CPU time it takes per video
  (all threads; on a CPU this is what decoding must share the cores with end to end; on a GPU the time spent
  launching its work, not waiting for it).
- ``videos_per_s_end_to_end`` (with ``video``): decoding, frame sampling and the test transform in DataLoader
  workers plus the model, as ``actionclip predict`` runs them, after one warm-up batch.
- ``peak_gflops``: dense ``PEAK_SIZE`` x ``PEAK_SIZE`` matmuls in the model's dtype (FLOP/s, i.e. two per multiply-add), timed in
  alternation with the model's batches so that both see the same machine; ``achieved_gflops``:
  ``2 x gflops_per_video x videos_per_s``, the model's rate in the same unit, so their ratio says how close the model
  runs to this machine's limit.
"""

from __future__ import annotations

import platform
import time
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count

from actionclip.checkpoints.sources import create_model
from actionclip.data.bad_samples import collate_skip_bad
from actionclip.data.transforms import frames_to_device
from actionclip.host.devices import DTYPES, resolve_precision
from actionclip.inference.inputs import PathLike, collect_videos, video_clips
from actionclip.models.inputs import model_image_size
from actionclip.models.precision import prepare_for_inference

WARMUP_ITERATIONS = 2
PEAK_SIZE = 2048  # the side of the peak's dense matmuls


def build_random_model(
    model_name: str, visual_prompt: str = "Transf", frames: int = 8, arch: str = "actionclip", device: str | torch.device = "cpu"
) -> nn.Module:
    """The model of ``model_name`` with random weights, built directly on ``device`` (``"meta"``: shapes only)."""
    with torch.device(device):
        model = create_model(model_name, None, visual_prompt, frames, arch=arch, quick_gelu=True)
    return model.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``params`` (without the token-embedding table), ``params_all``, ``params_video``, ``params_text`` and
    ``params_token_embedding``; see the module docstring."""
    total = sum(p.numel() for p in model.parameters())
    # The largest embedding table of the text tower is its token embedding, whatever the tower's class names it.
    token_embedding = max(m.weight.numel() for m in model.text.modules() if isinstance(m, nn.Embedding))
    return {
        "params": total - token_embedding,
        "params_all": total,
        "params_video": sum(p.numel() for p in model.video.parameters()),
        "params_text": sum(p.numel() for p in model.text.parameters()),
        "params_token_embedding": token_embedding,
    }


def _sdpa_macs_x2(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


# The CPU attention kernel, which some torch releases' FlopCounterMode does not know (2.14 counts it as zero).
_CPU_FLASH_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_EXTRA_FLOP_FORMULAS = (
    {_CPU_FLASH_ATTENTION: _sdpa_macs_x2} if _CPU_FLASH_ATTENTION is not None and _CPU_FLASH_ATTENTION not in flop_registry else {}
)


def count_gmacs(fn: Callable[[], object]) -> float:
    """Multiply-accumulates (in billions) of calling ``fn``: ``FlopCounterMode`` counts a multiply-add as 2, hence
    halved. Autograd must stay on: without it nn.MultiheadAttention takes a fused fast path the counter cannot see."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with counter:
        fn()
    return counter.get_total_flops() / 2 / 1e9


def count_video_gmacs(model: nn.Module, frames: int) -> float:
    """Multiply-accumulates (in billions) of ``model.encode_video`` for one video of ``frames`` frames."""
    size = model_image_size(model)
    video = torch.zeros(1, frames, 3, size, size, device=model.logit_scale.device)
    return count_gmacs(lambda: model.encode_video(video))


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device``'s current stream. A blocking event puts this thread to sleep until then;
    ``torch.cuda.synchronize`` spins, which would count the GPU's time as this process's CPU time."""
    if device.type == "cuda":
        event = torch.cuda.Event(blocking=True)
        event.record(torch.cuda.current_stream(device))
        event.synchronize()


def throughput(step: Callable[[], int], iterations: int, warmup: int, device: torch.device) -> float:
    """Items per second of ``step`` (which returns how many items it processed), timed over ``iterations`` calls
    after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    items = sum(step() for _ in range(iterations))
    _synchronize(device)
    return items / (time.perf_counter() - start)


def timed(step: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds (all threads) of one call of ``step``, until the device has done its work; the CPU
    time does not include waiting for the device."""
    _synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    step()
    _synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


@torch.inference_mode()
def model_and_peak_throughput(
    model: nn.Module,
    batch_size: int,
    frames: int,
    dtype: torch.dtype,
    iterations: int = 10,
    warmup: int = WARMUP_ITERATIONS,
    peak_matmuls: int = 4,
) -> tuple[float, float, float]:
    """Videos per second of ``model.encode_video`` on random batches of ``batch_size`` videos, FLOP/s (x 1e9) of
    dense ``PEAK_SIZE`` x ``PEAK_SIZE`` matmuls in ``dtype`` (the machine's practical limit for dense layers), and
    the process CPU seconds the model spends per video (all threads).

    The two are measured in alternation, one batch then ``peak_matmuls`` matmuls, ``iterations`` times after
    ``warmup`` rounds, so that both see the same machine: on a shared 2-vCPU virtual machine the same bf16 matmul
    ran at anywhere from 650 to 2000 GFLOP/s from one minute to the next.
    """
    size = model_image_size(model)
    device = model.logit_scale.device
    video = torch.randn(batch_size, frames, 3, size, size, device=device)
    peak_size = PEAK_SIZE
    a = torch.randn(peak_size, peak_size, device=device, dtype=dtype)
    b = torch.randn(peak_size, peak_size, device=device, dtype=dtype)

    def model_step() -> None:
        model.encode_video(video)

    def peak_step() -> None:
        for _ in range(peak_matmuls):
            torch.mm(a, b)

    for _ in range(warmup):
        model_step()
        peak_step()
    model_seconds = model_cpu = peak_seconds = 0.0
    for _ in range(iterations):
        wall, cpu = timed(model_step, device)
        model_seconds, model_cpu = model_seconds + wall, model_cpu + cpu
        peak_seconds += timed(peak_step, device)[0]
    videos = batch_size * iterations
    return videos / model_seconds, 2 * peak_size**3 * peak_matmuls * iterations / peak_seconds / 1e9, model_cpu / videos


@torch.inference_mode()
def end_to_end_throughput(
    model: nn.Module, videos: PathLike | Sequence[PathLike], batch_size: int, frames: int, iterations: int = 10, workers: int = 2
) -> float:
    """Videos per second of decoding + sampling + transform (in ``workers`` DataLoader processes) + ``encode_video``,
    over ``iterations`` batches after one warm-up batch (worker start-up, first decode). The videos are repeated to
    fill the batches; an unreadable one is an error."""
    paths = collect_videos(videos)
    if not paths:
        raise ValueError(f"{videos}: no videos to benchmark")
    wanted = (iterations + 1) * batch_size
    dataset = video_clips([paths[i % len(paths)] for i in range(wanted)], frames, model_image_size(model))
    device = model.logit_scale.device
    batches = iter(
        DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad, pin_memory=device.type == "cuda")
    )

    def step() -> int:
        batch = next(batches)
        if batch.bad:
            raise ValueError(f"{batch.bad[0].path}: {batch.bad[0].reason}")
        model.encode_video(frames_to_device(batch.frames, device, dataset.dataset.normalization))
        return len(batch.frames)

    return throughput(step, iterations, 1, device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def benchmark(
    model_name: str,
    visual_prompt: str = "Transf",
    frames: int = 8,
    batch_size: int = 8,
    arch: str = "actionclip",
    device: str | torch.device | None = None,
    iterations: int = 10,
    video: PathLike | Sequence[PathLike] | None = None,
    workers: int = 2,
    precision: str = "fp32",
) -> dict:
    """Parameters, GFLOPs per video and videos/s of a configuration on ``device`` (default: CUDA when available);
    with ``video`` (files or folders) also the end-to-end videos/s; ``precision`` casts the weights
    (:mod:`actionclip.models.precision`). See the module docstring for what each counts."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shapes = build_random_model(model_name, visual_prompt, frames, arch, "meta")
    result = {
        "model": model_name,
        "arch": arch,
        "visual_prompt": shapes.config.visual_prompt if shapes.uses_visual_prompt else None,
        "frames": frames,
        "image_size": model_image_size(shapes),
        "batch_size": batch_size,
        "device": str(device),
        "device_name": _device_name(device),
        **count_parameters(shapes),
        "gflops_per_video": count_video_gmacs(shapes, frames),
    }
    result["precision"] = resolve_precision(precision, device)
    model = prepare_for_inference(build_random_model(model_name, visual_prompt, frames, arch, device), result["precision"])
    result["videos_per_s"], result["peak_gflops"], result["cpu_s_per_video"] = model_and_peak_throughput(
        model, batch_size, frames, DTYPES[result["precision"]], iterations
    )
    result["achieved_gflops"] = 2 * result["gflops_per_video"] * result["videos_per_s"]
    if video is not None:
        result["videos_per_s_end_to_end"] = end_to_end_throughput(model, video, batch_size, frames, iterations, workers)
        result["workers"] = workers
    result["iterations"] = iterations
    return result


def format_benchmark(result: dict) -> str:
    """The text ``actionclip benchmark`` prints."""
    prompt = f", {result['visual_prompt']}" if result["visual_prompt"] else ""
    lines = [
        f"{result['arch']} {result['model']}{prompt}, {result['frames']} frames at {result['image_size']} px, "
        f"batch {result['batch_size']}, {result['device']} ({result['device_name']})",
        f"params            {result['params'] / 1e6:.1f} M ({result['params_all'] / 1e6:.1f} M with the "
        f"{result['params_token_embedding'] / 1e6:.1f} M token-embedding table)",
        f"GFLOPs per video  {result['gflops_per_video']:.2f} (multiply-accumulates of the video encoder)",
        f"videos/s          {result['videos_per_s']:.2f} (model only, {result['precision']} weights; "
        f"{1000 * result['cpu_s_per_video']:.0f} ms of process CPU time per video)",
        f"GFLOP/s           {result['achieved_gflops']:.1f} achieved, {result['peak_gflops']:.1f} peak (a dense "
        f"{result['precision']} matmul): {result['achieved_gflops'] / result['peak_gflops']:.0%} of the peak",
    ]
    if "videos_per_s_end_to_end" in result:
        lines.append(
            f"videos/s          {result['videos_per_s_end_to_end']:.2f} (decode + sample + transform "
            f"in {result['workers']} workers + model)"
        )
    return "\n".join(lines)
