"""Makes docs/timeline.png: the timeline of a generated 18-second video of three shape actions (6 s each), drawn by
``actionclip predict --window 2 --stride 1 --timeline``'s code.

The model is a tiny ActionCLIP whose video embedding is replaced by the clip's mean chroma (RGB minus grey) and whose
class texts are the colour axes, so that its scores are known without training or downloading anything: the picture
shows the windows, segments and heat strip the pipeline produces, not the accuracy of a trained model.

    python benchmarks/timeline_picture.py [--output docs/timeline.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import actionclip
from actionclip.data.synthetic import draw_clip, write_video
from actionclip.data.transforms import NORMALIZATIONS
from actionclip.inference.timeline import plot_timeline

ACTIONS = [("circle", "red", "right"), ("square", "blue", "grow"), ("triangle", "green", "down")]
LABELS = ["red shape", "green shape", "blue shape"]


def colour_model():
    actionclip.register_model_config(
        "picture-tiny",
        {
            "embed_dim": 64,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
        },
    )
    model = actionclip.create_model("picture-tiny", seed=0).eval()
    mean, std = (torch.tensor(v).view(1, 1, 3, 1, 1) for v in NORMALIZATIONS["clip"])

    def encode_video(video):
        rgb = (video * std + mean).mean(dim=(1, 3, 4))
        return F.pad(rgb - rgb.mean(dim=1, keepdim=True), (0, 61))

    def class_text_features(labels, templates=None):
        # Scaled down so that the scores are soft enough to show in the heat strip.
        return 0.05 * F.one_hot(torch.tensor([LABELS.index(label) for label in labels]), 64).float()[None]

    model.encode_video, model.class_text_features = encode_video, class_text_features
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "docs" / "timeline.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rng = np.random.default_rng(0)
        frames = np.concatenate([draw_clip(shape, colour, motion, 32, 60, rng) for shape, colour, motion in ACTIONS])
        video = write_video(Path(scratch) / "three_actions.mp4", frames, fps=10, lossless=True)
        (result,) = actionclip.predict(video, LABELS, colour_model(), window=2, stride=1, workers=0, top_k=3)
    result["video"] = "three_actions.mp4"
    print(json.dumps(result["segments"]))
    print(plot_timeline(result, args.output))


if __name__ == "__main__":
    main()
