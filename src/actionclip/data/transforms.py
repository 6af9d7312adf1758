"""Clip transforms: uint8 frames ``[T, H, W, 3]`` in, uint8 ``[T, 3, S, S]`` out.

Normalisation (:func:`normalize`, via :func:`frames_to_device`) happens after the clip reaches the device: uint8
frames are a quarter of the bytes float32 ones are through the DataLoader's shared memory, the pinned copy and
the host-to-device transfer.

They follow the official ``utils/Augmentation.py`` chain, but work on the whole clip as one tensor and
draw every random choice once per clip: the crop, the flip and the grayscale coin flip are per clip in
the official code too; its colour jitter draws new factors for every frame, ours draws one set per clip
(flicker between frames of one clip is not an augmentation of the action), and its RandAugment picks
ops per frame, ours per clip. Randomness comes from a numpy ``Generator`` passed per call, so a
dataset can make every clip reproducible whatever the number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# X-CLIP normalises with ImageNet's statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
# GroupMultiScaleCrop's scales of the short side.
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def to_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` (numpy or torch) -> uint8 tensor ``[T, 3, H, W]``."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {tuple(frames.shape)} {frames.dtype}")
    return frames.permute(0, 3, 1, 2)


def normalize(frames: torch.Tensor, statistics: str = "clip") -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32 scaled to [0, 1] and normalised with CLIP's (or ImageNet's) mean and std,
    on the frames' device."""
    mean, std = (torch.tensor(v, device=frames.device).view(3, 1, 1) for v in NORMALIZATIONS[statistics])
    return (frames.float() / 255.0 - mean) / std


def frames_to_device(frames: torch.Tensor, device: torch.device | str, statistics: str = "clip") -> torch.Tensor:
    """A batch of frames on ``device``, ready for a model: uint8 frames (what the datasets give) are moved, then
    normalised there with ``statistics``; float frames are taken as normalised already and only moved."""
    frames = frames.to(device, non_blocking=True)
    return normalize(frames, statistics) if frames.dtype == torch.uint8 else frames


def fixed_crop_offsets(width: int, height: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 ``(x, y)`` crop corners of ``GroupMultiScaleCrop.fill_fix_offset(more_fix_crop=True)``:
    corners, centre, edge centres and quarter points on a 4x4 grid."""
    w, h = (width - crop_w) // 4, (height - crop_h) // 4
    return [
        (0, 0),
        (4 * w, 0),
        (0, 4 * h),
        (4 * w, 4 * h),
        (2 * w, 2 * h),
        (0, 2 * h),
        (4 * w, 2 * h),
        (2 * w, 4 * h),
        (2 * w, 0),
        (w, h),
        (3 * w, h),
        (w, 3 * h),
        (3 * w, 3 * h),
    ]


def multi_scale_crop_box(
    height: int, width: int, size: int, scales=MULTI_SCALES, max_distort: int = 1, rng: np.random.Generator | int | None = None
) -> tuple[int, int, int, int]:
    """``(top, left, crop_h, crop_w)`` as ``GroupMultiScaleCrop._sample_crop_size``: crop sides are
    scales of the short side (snapped to ``size`` within 3 pixels), paired with aspect distortion at
    most ``max_distort`` scale steps, placed at one of the 13 fixed offsets."""
    rng = _rng(rng)
    sides = [int(min(width, height) * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[rng.integers(len(pairs))]
    offsets = fixed_crop_offsets(width, height, crop_w, crop_h)
    left, top = offsets[rng.integers(len(offsets))]
    return top, left, crop_h, crop_w


_HSV_CHANNEL_SHIFT = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)


def adjust_hue(frames: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """torchvision's ``adjust_hue`` (rotate the HSV hue by ``hue_factor`` turns) on uint8 ``[..., 3, H, W]``,
    within 1 level of it, about twice as fast: the hue is the costliest step of the train chain.

    Value (max) and max - min are unchanged by a hue rotation, so RGB comes back directly with
    ``channel = max - (max - min) * clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 * hue) mod 6`` for
    n = 5, 3, 1 (R, G, B), instead of through the six-sector table.
    """
    rgb = frames.float()
    r, g, b = rgb.unbind(-3)
    maxc, minc = rgb.amax(-3), rgb.amin(-3)
    delta = maxc - minc
    safe = delta.clamp(min=1e-6)  # grey pixels: hue 0, unchanged by the rotation
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue / 6 + hue_factor).remainder_(1.0).mul_(6)
    k = (_HSV_CHANNEL_SHIFT + hue.unsqueeze(-3)).remainder_(6)
    weight = torch.minimum(k, 4 - k).clamp_(0, 1)
    # Same rounding as torchvision's float -> uint8 conversion.
    return (maxc.unsqueeze(-3) - delta.unsqueeze(-3) * weight).mul_((256 - 1e-3) / 255).to(torch.uint8)


@dataclass
class TrainTransform:
    """Multi-scale crop + bilinear resize to ``size``, flip, colour jitter, grayscale (+ RandAugment)."""

    size: int = 224
    scales: tuple[float, ...] = MULTI_SCALES
    max_distort: int = 1
    flip: bool = True  # off for Something-Something, where left/right is part of the label
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    randaugment: tuple[int, int] | None = None  # (num_ops, magnitude); the official K400 config uses (2, 9)
    normalization: str = "clip"  # or "imagenet" (X-CLIP)

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator | int | None = None) -> torch.Tensor:
        rng = _rng(rng)
        x = to_tchw(frames)
        if self.randaugment is not None:
            # RandAugment draws from torch's global generator: seed it from ours, without disturbing it.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**63)))
                x = v2.RandAugment(num_ops=self.randaugment[0], magnitude=self.randaugment[1])(x)
        top, left, h, w = multi_scale_crop_box(x.shape[-2], x.shape[-1], self.size, self.scales, self.max_distort, rng)
        x = F.resize(x[..., top : top + h, left : left + w], [self.size, self.size], antialias=True)
        if self.flip and rng.random() < 0.5:
            x = F.horizontal_flip(x)
        if rng.random() < self.jitter_p:
            x = self._jitter(x, rng)
        if rng.random() < self.grayscale_p:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        return x

    def _jitter(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        # torchvision's ColorJitter: the four adjustments in random order, factors drawn once (per clip).
        factors = {
            "brightness": rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness),
            "contrast": rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast),
            "saturation": rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation),
            "hue": rng.uniform(-self.hue, self.hue),
        }
        adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast, "saturation": F.adjust_saturation, "hue": adjust_hue}
        for name in np.array(list(adjust))[rng.permutation(4)]:
            x = adjust[name](x, float(factors[name]))
        return x


@dataclass
class TestTransform:
    """Resize the short side to ``scale_size`` (bicubic; default ``size * 256 // 224``) + centre crop ``size``."""

    size: int = 224
    scale_size: int | None = None
    normalization: str = "clip"  # or "imagenet" (X-CLIP)

    @property
    def short_side(self) -> int:
        """The short side frames are resized to before cropping: decoding needs no more."""
        return self.scale_size or self.size * 256 // 224

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator | int | None = None) -> torch.Tensor:
        x = to_tchw(frames)
        x = F.resize(x, [self.short_side], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        return F.center_crop(x, [self.size, self.size])


@dataclass
class ThreeCropTransform:
    """Multi-view testing: resize the short side to ``scale_size`` (bicubic; default ``size``), then three
    ``size`` x ``size`` crops along the long side (start, centre, end). Returns ``[3, T, 3, S, S]``."""

    size: int = 224
    scale_size: int | None = None
    normalization: str = "clip"  # or "imagenet" (X-CLIP)

    @property
    def short_side(self) -> int:
        """The short side frames are resized to before cropping: decoding needs no more."""
        return self.scale_size or self.size

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator | int | None = None) -> torch.Tensor:
        x = to_tchw(frames)
        x = F.resize(x, [self.short_side], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        height, width = x.shape[-2:]
        if min(height, width) < self.size:
            raise ValueError(f"scale_size {self.scale_size} is smaller than the crop size {self.size}")
        s = self.size
        if width >= height:
            corners = [(0, (height - s) // 2), ((width - s) // 2, (height - s) // 2), (width - s, (height - s) // 2)]
        else:
            corners = [((width - s) // 2, 0), ((width - s) // 2, (height - s) // 2), ((width - s) // 2, height - s)]
        return torch.stack([x[..., top : top + s, left : left + s] for left, top in corners])
