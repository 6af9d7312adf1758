"""The demo's world: coloured shapes moving in six ways, as videos and as captioned images.

4 colours x 3 shapes x 6 motions = 72 classes such as "red circle moving left", drawn by ``data.synthetic.draw_clip``.
Opposite motions are one drawing played both ways, so only frame order tells them apart. The (colour, shape) pairs
{red, green} x {circle, square} are held out of fine-tuning with all their motions: 48 classes to fine-tune on, 24
unseen compositions for zero-shot. Every colour, shape and motion is seen in fine-tuning, only not in these
combinations. Holding out whole (colour, shape) pairs keeps two attributes from giving the third away, and holding
out a 2 x 2 block keeps colour alone (or shape alone) from naming the pair among the unseen classes: zero-shot needs
both.

Pre-training sees single images of every composition, like web image-text data: still frames captioned "red circle"
(or with where the shape is and how big), and motion-trail stills -- a clip's frames painted over each other,
fainter the older -- captioned "red circle moving left". The trails are what grounds the motion words: without them
the text tower never sees "left" apart from "right" and maps both to one embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from actionclip.data.synthetic import MOTIONS, REVERSE_OF, SHAPES, class_text, draw_clip
from actionclip.data.transforms import to_tchw

COLOURS = ("red", "green", "blue", "yellow")  # four of data.synthetic.COLOURS
HELD_OUT = (("red", "circle"), ("red", "square"), ("green", "circle"), ("green", "square"))
# The drawn motions and their twins, the same drawings played backwards.
TWIN_OF = {forward: reverse for reverse, forward in REVERSE_OF.items()}
SIZE, FRAMES = 32, 8


def all_classes() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def splits() -> tuple[list, list]:
    """The 48 fine-tuning classes and the 24 unseen compositions."""
    classes = all_classes()
    return [c for c in classes if c[:2] not in HELD_OUT], [c for c in classes if c[:2] in HELD_OUT]


def draw_rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *ids])


def motion_trail(clip: np.ndarray, motion: str) -> np.ndarray:
    """One still ``[H, W, 3]`` showing a clip's motion: every frame's shape painted over the last, from faint
    (oldest) to full colour (newest). For growing and shrinking the larger shapes are painted first so that
    the smaller ones stay visible; their brightness still says which came first."""
    background = clip[0, 0, 0].astype(np.float32)
    foreground = (clip != clip[0, 0, 0]).any(-1)
    order = range(len(clip))
    if motion in ("grow", "shrink"):
        order = sorted(order, key=lambda t: -int(foreground[t].sum()))
    image = np.broadcast_to(background, clip.shape[1:]).copy()
    for t in order:
        weight = 0.25 + 0.75 * t / (len(clip) - 1)
        image[foreground[t]] = background + weight * (clip[t][foreground[t]] - background)
    return image.round().astype(np.uint8)


def still_caption(frame: np.ndarray, colour: str, shape: str, rng: np.random.Generator) -> str:
    """ "red circle", or with where the shape is ("red circle on the left", "red circle at the top") or how big
    ("small red circle"). Video frames carry no trails, so telling "moving left" from "moving right" from frames
    needs image features that know where a shape is and how large: these captions ask for that."""
    mask = (frame != frame[0, 0]).any(-1)
    ys, xs = np.nonzero(mask)
    x, y, radius = xs.mean() / SIZE, ys.mean() / SIZE, np.sqrt(mask.sum() / np.pi) / SIZE
    words = {
        1: "on the left" if x < 0.4 else "on the right" if x > 0.6 else None,
        2: "at the top" if y < 0.4 else "at the bottom" if y > 0.6 else None,
        3: "small" if radius < 0.11 else "big" if radius > 0.2 else None,
    }
    kind = int(rng.integers(4))
    if kind == 0 or words[kind] is None:
        return f"{colour} {shape}"
    return f"{words[kind]} {colour} {shape}" if kind == 3 else f"{colour} {shape} {words[kind]}"


def pretraining_pairs(count: int, seed: int, stream: int = 1) -> tuple[torch.Tensor, list[str]]:
    """``count`` images ``[N, 3, H, W]`` (uint8) and captions: half still frames ("red circle", "red circle on
    the left", ...), half motion trails ("red circle moving left"), of every colour, shape and motion."""
    classes = all_classes()
    images, captions = [], []
    for i in range(count):
        rng = draw_rng(seed, stream, i)
        colour, shape, motion = classes[rng.integers(len(classes))]
        clip = draw_clip(shape, colour, motion, SIZE, FRAMES, rng)
        if i % 2:
            images.append(motion_trail(clip, motion))
            captions.append(class_text(colour, shape, motion))
        else:
            images.append(clip[rng.integers(FRAMES)])
            captions.append(still_caption(images[-1], colour, shape, rng))
    return to_tchw(np.stack(images)), captions


@dataclass
class Videos:
    frames: torch.Tensor  # uint8 [N, T, 3, H, W]; rows 2k and 2k+1 are one drawing played both ways
    labels: torch.Tensor  # index into ``classes``
    classes: list[tuple[str, str, str]]

    @property
    def names(self) -> list[str]:
        return [class_text(*c) for c in self.classes]


def render_videos(classes: Sequence[tuple[str, str, str]], draws: int, seed: int, stream: int) -> Videos:
    """``draws`` drawings per forward motion of each (colour, shape) in ``classes``, each stored forwards and
    backwards (two classes, e.g. moving right and moving left)."""
    index = {c: i for i, c in enumerate(classes)}
    frames, labels = [], []
    for colour, shape, motion in classes:
        if motion not in TWIN_OF:
            continue
        for j in range(draws):
            rng = draw_rng(seed, stream, COLOURS.index(colour), SHAPES.index(shape), MOTIONS.index(motion), j)
            clip = to_tchw(draw_clip(shape, colour, motion, SIZE, FRAMES, rng))
            frames += [clip, clip.flip(0)]
            labels += [index[(colour, shape, motion)], index[(colour, shape, TWIN_OF[motion])]]
    return Videos(torch.stack(frames), torch.tensor(labels), list(classes))


def check_images(per_pair: int, seed: int, stream: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh images to check a pre-trained CLIP: ``per_pair`` still frames of each (colour, shape) with that pair's
    index in ``COLOURS x SHAPES``, and the motion trail of each frame's clip with its class's index in
    ``all_classes()``. Images are uint8 ``[N, 3, H, W]``."""
    classes = all_classes()
    stills, still_targets, trails, trail_targets = [], [], [], []
    for k, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for j in range(per_pair):
            rng = draw_rng(seed, stream, k, j)
            motion = MOTIONS[j % len(MOTIONS)]
            clip = draw_clip(shape, colour, motion, SIZE, FRAMES, rng)
            stills.append(clip[rng.integers(FRAMES)])
            still_targets.append(k)
            trails.append(motion_trail(clip, motion))
            trail_targets.append(classes.index((colour, shape, motion)))
    return to_tchw(np.stack(stills)), torch.tensor(still_targets), to_tchw(np.stack(trails)), torch.tensor(trail_targets)
