"""Synthetic action videos: coloured shapes moving in several ways, written as real H.264 files.

Each class is ``<colour> <shape> <motion>``, e.g. "red circle moving left" or "blue square growing".
Opposite motions (left/right, up/down, grow/shrink) are built from one drawn frame sequence played
forwards and backwards, and encoded losslessly: the decoded *set* of frames of a "moving left" clip is
exactly that of its "moving right" twin, so only temporal order separates them. A model that mean-pools
frame features over time provably cannot tell these classes apart; that is the point of having them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
from tqdm import tqdm

from .annotations import Sample, video_list_dataset

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 215, 225),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink")
MOTION_TEXT = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "grow": "growing",
    "shrink": "shrinking",
}
# Each reversed motion shares its frames with a drawn one: its clip is that clip played backwards.
REVERSE_OF = {"left": "right", "up": "down", "shrink": "grow"}
OPTIONS_FILE = "options.json"  # the settings a keyed dataset was generated with, written when it is complete


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: int = 25,
    codec: str | None = None,
    timestamps_ms: Sequence[int] | None = None,
    gop: int | None = None,
    lossless: bool = False,
    rotation: int | None = None,
) -> Path:
    """Encode uint8 ``[H, W, 3]`` frames (even H and W) into ``path``; the container follows the suffix.

    ``codec`` defaults to libx264 (mpeg4 for .avi). ``timestamps_ms`` gives each frame its own time
    (variable frame rate). ``gop`` sets the key frame interval, ``rotation`` a display-matrix rotation
    in degrees counter-clockwise, ``lossless`` x264's ``qp=0``.
    """
    path = Path(path)
    codec = codec or ("mpeg4" if path.suffix.lower() == ".avi" else "libx264")
    options = {"qp": "0"} if lossless else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.pix_fmt = "yuv420p"
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            if i == 0:
                height, width = image.shape[:2]
                if height % 2 or width % 2:
                    raise ValueError(f"{path}: frame size {width}x{height} must be even for yuv420p")
                stream.width, stream.height = width, height
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
            if timestamps_ms is not None:
                frame.pts, frame.time_base = int(timestamps_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= 0.85 * r) & (np.abs(y - cy) <= 0.85 * r)
    if shape == "triangle":  # apex up, base at cy + r
        return (y >= cy - r) & (y <= cy + r) & (np.abs(x - cx) <= (y - (cy - r)) / 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def draw_clip(shape: str, colour: str, motion: str, size: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``[num_frames, size, size, 3]`` uint8 frames of one clip. The forward motions ("right", "down",
    "grow") are drawn; their opposites are the same draws reversed in time."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; choose from {sorted(COLOURS)}")
    if motion in REVERSE_OF:
        return draw_clip(shape, colour, REVERSE_OF[motion], size, num_frames, rng)[::-1].copy()
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    background = int(rng.integers(10, 60))
    steps = np.linspace(0.0, 1.0, num_frames)
    if motion == "grow":
        r0, r1 = size * rng.uniform(0.08, 0.13), size * rng.uniform(0.3, 0.38)
        cx, cy = (rng.uniform(r1, size - r1) for _ in range(2))
        params = [(cx, cy, r0 + (r1 - r0) * s) for s in steps]
    else:
        r = size * rng.uniform(0.12, 0.18)
        travel = size * rng.uniform(0.4, 0.55)
        start = rng.uniform(r, size - r - travel)
        across = rng.uniform(r, size - r)
        along = [start + travel * s for s in steps]
        params = [(a, across, r) if motion == "right" else (across, a, r) for a in along]
    clip = np.full((num_frames, size, size, 3), background, dtype=np.uint8)
    for frame, (cx, cy, r) in zip(clip, params):
        frame[_mask(shape, size, cx, cy, r)] = COLOURS[colour]
    return clip


def class_text(colour: str, shape: str, motion: str) -> str:
    return f"{colour} {shape} {MOTION_TEXT[motion]}"


@dataclass
class SyntheticDataset:
    """What ``make_synthetic_dataset`` wrote. ``list_file`` lines are ``<path relative to root> <label>``
    (mmaction2 / ViFi-CLIP format), ``classes_file`` is the ``id,name`` CSV; ``samples`` hold absolute paths."""

    root: Path
    list_file: Path
    classes_file: Path
    classes: list[str]
    samples: list[Sample] = field(default_factory=list)


def make_synthetic_dataset(
    root: str | os.PathLike,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = ("red", "green", "blue"),
    motions: Sequence[str] = MOTIONS,
    clips_per_class: int = 2,
    size: int = 32,
    num_frames: int = 8,
    fps: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> SyntheticDataset:
    """Write ``clips_per_class`` lossless H.264 clips of ``num_frames`` ``size`` x ``size`` frames for each
    (colour, shape, motion) class under ``root/videos/``, plus ``root/list.txt`` and ``root/classes.csv``.
    The same seed gives the same decoded frames."""
    if size % 2 or size < 16:
        raise ValueError(f"size must be even and >= 16, got {size}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show motion, got {num_frames}")
    for name, given, known in (("shape", shapes, SHAPES), ("colour", colours, tuple(COLOURS)), ("motion", motions, MOTIONS)):
        if not given:
            raise ValueError(f"no {name}s given; choose from {known}")
        unknown = [g for g in given if g not in known]
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; choose from {known}")
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    combos = [(c, s, m) for c in colours for s in shapes for m in motions]
    classes = [class_text(*combo) for combo in combos]
    samples = []
    lines = []
    for label, (colour, shape, motion) in enumerate(tqdm(combos, desc="synthetic videos", disable=not progress)):
        for j in range(clips_per_class):
            # Twins (left/right, ...) get the same draws: seed by the forward motion. Global name positions
            # make a clip independent of which other colours, shapes and motions are generated.
            forward = REVERSE_OF.get(motion, motion)
            rng = np.random.default_rng([seed, list(COLOURS).index(colour), SHAPES.index(shape), MOTIONS.index(forward), j])
            relative = f"videos/{classes[label].replace(' ', '_')}_{j:03d}.mp4"
            write_video(root / relative, draw_clip(shape, colour, motion, size, num_frames, rng), fps=fps, lossless=True)
            lines.append(f"{relative} {label}")
            samples.append(Sample(str(root / relative), label, num_frames))
    list_file = root / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    classes_file = root / "classes.csv"
    classes_file.write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(classes)))
    return SyntheticDataset(root, list_file, classes_file, classes, samples)


def _generation_settings(**options) -> dict:
    """Every argument of :func:`make_synthetic_dataset` but ``root`` and ``progress``, ``options`` given or its default,
    as JSON values: what the videos depend on."""
    bound = inspect.signature(make_synthetic_dataset).bind(None, **options)
    bound.apply_defaults()
    return {
        name: list(value) if isinstance(value, (list, tuple)) else value
        for name, value in bound.arguments.items()
        if name not in ("root", "progress")
    }


def keyed_synthetic_dataset(parent: str | os.PathLike, name: str, **options) -> tuple[list[Sample], list[str]]:
    """``(samples, classes)`` of the videos ``make_synthetic_dataset(**options)`` writes, kept under
    ``parent/<name>-<key>``, the key a hash of every setting (defaults included).

    A folder holding ``options.json`` with exactly these settings is read; else the videos are generated there and
    ``options.json`` is written last, so an interrupted generation is redone. Other settings get another folder: a
    changed option never reuses videos made without it, and nothing already generated is overwritten or deleted.
    """
    settings = _generation_settings(**options)
    record = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    root = Path(parent) / f"{name}-{hashlib.sha256(record.encode()).hexdigest()[:12]}"
    if not ((root / OPTIONS_FILE).is_file() and (root / OPTIONS_FILE).read_text() == record):
        make_synthetic_dataset(root, **settings)
        (root / OPTIONS_FILE).write_text(record)
    # Read back from the list even when just written, so the first use sees the samples every later use sees.
    return video_list_dataset(root / "list.txt", root / "classes.csv", root)
