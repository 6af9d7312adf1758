"""Exported models run with ONNX Runtime, without torch: this module imports only numpy, Pillow, onnxruntime, the BPE
tokenizer (:mod:`actionclip.onnx_runtime.bpe`), the prompt templates and :mod:`actionclip.video` (PyAV), so a
deployment can classify videos with ``pip install onnxruntime numpy av pillow regex ftfy`` and the package source
alone::

    from actionclip.onnx_runtime.runtime import classify_videos
    classify_videos("export_dir", ["clip.mp4"], ["arm wrestling", "swimming"])
    # [{"video": "clip.mp4", "labels": ["arm wrestling", "swimming"], "scores": [0.93, 0.07]}]

An export directory (``actionclip export``) holds ``export.json`` (what the graphs take and the test arithmetic),
the graphs of :mod:`actionclip.export.graphs`, CLIP's BPE merges and, optionally, the normalised text features
of a label list, with which classifying those labels needs neither the text graph nor the tokenizer. The frames are
those ``actionclip predict`` reads with one view (centre sampling of T segments, decoded sparsely by
:mod:`actionclip.video`), resized as it does (short side, bicubic with antialiasing, then a centre crop) but with
PIL, which rounds to uint8 after each axis where torchvision's tensor resize rounds once: up to 2 levels of 255
apart on fewer than 0.5% of the values (measured on the shared test clips and on random frames up to 1080p, crops
of 32, 224 and 336 pixels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from actionclip.host.records import load_npy
from actionclip.onnx_runtime.bpe import BPETokenizer
from actionclip.onnx_runtime.export_config import EXPORT_CONFIG, ONNX_PRECISIONS, WEIGHTS_STAMP, read_export_config
from actionclip.prompts import fill_templates, resolve_templates
from actionclip.video.clips import read_clips
from actionclip.video.decode import VideoReadError, open_video
from actionclip.video.sampling import sample_indices

if TYPE_CHECKING:
    import onnxruntime


def _onnxruntime():
    """ONNX Runtime, an optional dependency: imported when an export runs, so that torch models never need it."""
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("running an ONNX export needs ONNX Runtime: pip install 'actionclip[onnx]'") from None
    return onnxruntime


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ExportedModel:
    """An export directory's graphs in ONNX Runtime sessions. ``precision``: fp32 or int8 (the video graph; None:
    the export's default); ``threads``: ONNX Runtime's intra-op threads (None: its default, all cores)."""

    def __init__(self, directory: str | os.PathLike, precision: str | None = None, threads: int | None = None):
        self.directory = Path(directory)
        self.config = read_export_config(self.directory)
        self.precision = precision or self.config["precision"]
        if self.precision not in ONNX_PRECISIONS:
            raise ValueError(f"an exported model runs in {' or '.join(ONNX_PRECISIONS)}, not {self.precision!r}")
        video_key = "video_int8" if self.precision == "int8" else "video"
        if video_key not in self.config["files"]:
            raise ValueError(f"{self.directory}: exported without int8 graphs (export again with --precision int8)")
        options = _onnxruntime().SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._options = options
        self.video_session = self._session(self.config["files"][video_key])
        self._text_session = self._tokenizer = None
        self.prompts_session = self._session(self.config["files"]["prompts"]) if "prompts" in self.config["files"] else None

    def _session(self, name: str) -> onnxruntime.InferenceSession:
        """The graph ``name`` (a plain name, by :func:`read_export_config`) in a session, once it is a graph ONNX
        Runtime loads and one exported from the weights ``export.json`` records."""
        path = self.directory / name
        if not path.is_file():
            raise ValueError(f"{path}: missing ({EXPORT_CONFIG} names it)")
        try:
            session = _onnxruntime().InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime's own exception classes, one per status, none a common base
            raise ValueError(f"{path}: not an ONNX graph that ONNX Runtime loads ({str(error).splitlines()[0][-120:]})") from None
        stamp = session.get_modelmeta().custom_metadata_map.get(WEIGHTS_STAMP)
        if self.config["version"] >= 2 and stamp != self.config["weights_digest"]:
            raise ValueError(
                f"{path}: exported from other weights than {self.directory / EXPORT_CONFIG} records (a graph of "
                "another export mixed in); export the model again into a new folder"
            )
        return session

    @property
    def num_frames(self) -> int:
        return self.config["num_frames"]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    def check_frames(self, frames: int) -> None:
        if not self.config["dynamic_frames"] and frames != self.num_frames:
            raise ValueError(f"this export takes exactly {self.num_frames} frames ({self.config['fixed_frames_reason']}), not {frames}")
        if frames > self.config["max_frames"]:
            raise ValueError(f"this export takes at most {self.config['max_frames']} frames, not {frames}")

    def encode_video(self, frames: np.ndarray) -> list[np.ndarray]:
        """Normalised float32 frames ``[B, T, 3, H, W]`` -> the video graph's outputs: the un-normalised embedding
        ``[B, D]`` (and X-CLIP's visual tokens)."""
        self.check_frames(frames.shape[1])
        return self.video_session.run(None, {"frames": np.ascontiguousarray(frames, dtype=np.float32)})

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            self._tokenizer = BPETokenizer(self.directory / self.config["tokenizer"], self.config["context_length"])
        return self._tokenizer(list(texts))

    def encode_text(self, tokens: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Token ids ``[N, L]`` -> un-normalised text embeddings ``[N, D]``; the tokens are cut to the longest text
        (the end token has the highest id), as :class:`actionclip.models.text.TextEncoder` does."""
        if self._text_session is None:
            self._text_session = self._session(self.config["files"]["text"])
        tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1].astype(np.int64)
        return np.concatenate(
            [self._text_session.run(None, {"tokens": tokens[i : i + batch_size]})[0] for i in range(0, len(tokens), batch_size)]
        )

    def templates(self, templates=None) -> list[str]:
        return resolve_templates(self.config["templates"] if templates is None else templates)

    def class_text_features(self, labels: Sequence[str], templates=None) -> np.ndarray:
        """``[K, C, D]`` text features of every template x label: L2-normalised for ActionCLIP, un-normalised for
        X-CLIP (its prompts add to them first), as the models' ``class_text_features``. The export's precomputed
        features when labels and templates are theirs."""
        templates, labels = self.templates(templates), list(labels)
        stored = self.config.get("label_features")
        if stored and stored["labels"] == labels and stored["templates"] == templates:
            return load_npy(self.directory / stored["file"], (len(templates), len(labels), self.config["embed_dim"]), np.float32)
        features = self.encode_text(self.tokenize(fill_templates(templates, labels)))
        if self.config["arch"] != "xclip":
            features = _normalize(features)
        return features.reshape(len(templates), len(labels), -1)

    def video_probabilities(self, frames: np.ndarray, text_features: np.ndarray, ensemble: str = "softmax") -> np.ndarray:
        """``[B, C]`` probabilities with the test arithmetic of ``export.json`` (that of the models'
        ``video_probabilities``)."""
        outputs = self.encode_video(frames)
        if self.config["arch"] == "xclip":
            if ensemble != "softmax":
                raise ValueError("X-CLIP combines templates by averaging probabilities (ensemble='softmax')")
            video, tokens = outputs
            logits = [
                self.prompts_session.run(
                    None, {"video_features": video, "visual_tokens": tokens, "text_features": np.ascontiguousarray(f, dtype=np.float32)}
                )[0]
                for f in text_features
            ]
            return np.mean([_softmax(x) for x in logits], axis=0)
        video = _normalize(outputs[0])
        scale = self.config["test"]["logit_scale"]
        if ensemble == "softmax":
            return _softmax(scale * np.einsum("bd,kcd->bkc", video, text_features)).mean(axis=1)
        if ensemble == "embedding":
            return _softmax(scale * video @ _normalize(text_features.mean(axis=0)).T)
        raise ValueError(f"ensemble must be 'softmax' or 'embedding', got {ensemble!r}")


def centre_crop_frames(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, size, size]``, as ``TestTransform`` and ``normalize`` make them:
    short side to ``size * 256 // 224`` (PIL's antialiased bicubic), centre crop, scaled to [0, 1] and normalised."""
    h, w = frames.shape[1:3]
    short = size * 256 // 224
    new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = (
        np.stack(
            [
                np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC))[top : top + size, left : left + size]
                for frame in frames
            ]
        ).astype(np.float32)
        / 255.0
    )
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 3, 1, 2)


def read_clip(path: str | os.PathLike, frames: int, decode_short_side: int | None = None) -> np.ndarray:
    """uint8 ``[frames, H, W, 3]``: the clip ``actionclip predict`` reads with one view, the centre frame of each of
    ``frames`` segments, from a video file or a folder of frames (``img_00001.jpg``, ...). Only those frames are
    converted to RGB, so memory grows with the video's length only by a table of its packets' timestamps;
    ``decode_short_side`` scales larger frames down while decoding, as predict's option of that name. Raises
    ``VideoReadError``."""
    video = open_video(path, short_side=decode_short_side)
    return read_clips(video, video.num_frames, lambda count: [sample_indices(count, frames, "test")])[0]


def classify_videos(
    directory: str | os.PathLike | ExportedModel,
    videos: Sequence[str | os.PathLike],
    labels: Sequence[str],
    top_k: int = 5,
    templates=None,
    precision: str | None = None,
    decode_short_side: int | None = None,
) -> list[dict]:
    """One result dict per video, as ``actionclip.predict`` gives them with one view: ``{"video", "labels",
    "scores"}`` best first, or ``{"video", "error"}`` for a video that cannot be read."""
    model = directory if isinstance(directory, ExportedModel) else ExportedModel(directory, precision)
    labels = list(labels)
    text_features = model.class_text_features(labels, templates)
    results = []
    for path in videos:
        try:
            clip = read_clip(path, model.num_frames, decode_short_side)
        except VideoReadError as error:
            results.append({"video": str(path), "error": error.reason})
            continue
        frames = centre_crop_frames(clip, model.image_size, model.config["mean"], model.config["std"])
        probabilities = model.video_probabilities(frames[None], text_features)[0]
        order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(labels))]
        results.append({"video": str(path), "labels": [labels[i] for i in order], "scores": [float(probabilities[i]) for i in order]})
    return results
