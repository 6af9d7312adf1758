"""``actionclip predict`` with ONNX Runtime: an export directory as the checkpoint, or ``--runtime onnx`` with any
other checkpoint or model, exported on the fly into a cache (``$ACTIONCLIP_CACHE/onnx``, default
``~/.cache/actionclip/onnx``) keyed by the weights' digest and the export options, so that the next call reuses it.

:class:`OnnxPredictModel` has what the predict loop uses of a torch model (``config``, ``logit_scale.device``,
``eval``/``train``, ``class_text_features``, ``video_probabilities``), on torch tensors, computed by
:class:`actionclip.onnx_runtime.runtime.ExportedModel`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from actionclip.checkpoints.sources import read_model
from actionclip.data.transforms import NORMALIZATIONS
from actionclip.export.directory import weights_digest, write_export
from actionclip.host.devices import cpu_has_native_bf16
from actionclip.host.files import ONNX, cache_root
from actionclip.models.build import ARCHITECTURES
from actionclip.onnx_runtime.export_config import EXPORT_CONFIG, is_export_dir, read_export_config
from actionclip.onnx_runtime.runtime import ExportedModel

RUNTIMES = ("torch", "onnx")


def wants_onnx(checkpoint, runtime: str) -> bool:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime == "onnx" or is_export_dir(checkpoint)


def resolve_onnx_precision(precision: str | None, device) -> str | None:
    """fp32 or int8; ``auto`` (or None): int8 on CPUs without native bf16, where int8 matmuls are the fastest path,
    fp32 otherwise. None is returned for an export directory's own default only when ``precision`` is None."""
    if torch.device(device).type != "cpu":
        raise ValueError("the ONNX runtime runs on the CPU (--device cpu)")
    if precision in ("fp32", "int8"):
        return precision
    if precision == "auto":
        return "fp32" if cpu_has_native_bf16() else "int8"
    raise ValueError(f"with the ONNX runtime, precision is fp32, int8 or auto, not {precision!r}")


def onnx_cache_dir() -> Path:
    return cache_root() / ONNX


def cached_export(model: torch.nn.Module, frames: int, precision: str, cache_dir: str | Path | None = None) -> Path:
    """The export directory of ``model`` in the cache, made when missing (atomically: a half-written export is never
    taken for a finished one)."""
    # format 2: self-attention traced batch-first (export/graphs.py), faster; exports cached before are remade.
    request = {"format": 2, "weights": weights_digest(model), "arch": model.config.arch, "frames": frames, "precision": precision}
    if precision == "int8":  # only then: the int8 module needs the onnx package, a cached fp32 export does not
        from actionclip.export.int8 import INT8_VERSION

        request["int8"] = INT8_VERSION
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir or onnx_cache_dir()) / key
    if is_export_dir(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=path.parent))
    try:
        write_export(model, staging, precision, frames)
        os.replace(staging, path)
    except OSError:
        if not is_export_dir(path):  # another process may have finished the same export first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


class OnnxPredictModel:
    """An :class:`ExportedModel` behind the interface of the torch models that ``iter_predictions`` uses."""

    def __init__(self, exported: ExportedModel):
        self.exported = exported
        config = exported.config
        # What only the torch side reads of export.json: checked here, as the runtime checks the rest.
        for key, known in (("arch", ARCHITECTURES), ("normalization", NORMALIZATIONS)):
            if config[key] not in known:
                raise ValueError(f"{exported.directory / EXPORT_CONFIG}: {key}: must be one of {', '.join(known)}, got {config[key]!r}")
        # What `eval` checks and remembers of a torch model's config: an ActionCLIP export's visual prompt decides,
        # as for the model, whether another frame count is refused; its templates are the model's test templates.
        self.config = SimpleNamespace(
            arch=config["arch"],
            num_frames=config["num_frames"],
            normalization=config["normalization"],
            visual_prompt=config["visual_prompt"],
            templates=config["templates"],
            clip={"embed_dim": config["embed_dim"], "vision_cfg": {"image_size": config["image_size"]}},
        )
        self.default_templates = config["templates"]
        # The attributes of its architecture that the engine and search ask of a model (a property reads this config).
        architecture = ARCHITECTURES[config["arch"]]
        for name in (
            "objective",
            "has_class_head",
            "has_text_tower",
            "video_specific_text",
            "uses_visual_prompt",
            "temporal_module",
            "any_frame_count",
        ):
            value = getattr(architecture, name)
            setattr(self, name, value.fget(self) if isinstance(value, property) else value)
        # The key of its class text features in the text-feature cache: the weights it was exported from, run by
        # ONNX Runtime (within 1e-4 of torch's, so not torch's entries).
        self.text_features_digest = f"onnx:{config['weights_digest']}"
        self.logit_scale = torch.zeros(())  # its device is where the predict loop leaves the frames: the CPU
        self.training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise ValueError("an ONNX model cannot be trained")
        return self

    def class_text_features(self, labels, templates=None, clean_labels: bool = False) -> torch.Tensor:
        if clean_labels:
            raise ValueError("clean the labels before an ONNX model scores them")
        return torch.from_numpy(self.exported.class_text_features(labels, templates))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.exported.encode_video(video.float().numpy())[0])

    def video_probabilities(self, video: torch.Tensor, text_features: torch.Tensor, ensemble: str = "softmax") -> torch.Tensor:
        frames = video.float().numpy()
        return torch.from_numpy(self.exported.video_probabilities(frames, text_features.numpy(), ensemble))


def load_onnx_model(
    checkpoint=None,
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    visual_prompt: str = "Transf",
    num_frames: int = 8,
    arch: str | None = None,
    device="cpu",
    precision: str | None = "auto",
    threads: int | None = None,
) -> OnnxPredictModel:
    """An export directory as it is, or any other checkpoint or model (see ``load_model``) exported into the cache.
    ``threads``: ONNX Runtime's intra-op threads (None: all cores)."""
    if is_export_dir(checkpoint):
        exported_precision = read_export_config(checkpoint)["precision"]
        # auto keeps the export's own choice: its author picked int8 or fp32 for the deployment
        wanted = exported_precision if precision in (None, "auto") else resolve_onnx_precision(precision, device)
        exported = ExportedModel(checkpoint, wanted, threads)
        if arch is not None and exported.config["arch"] != arch:
            raise ValueError(f"{checkpoint}: holds an {exported.config['arch']!r} model, not {arch!r}")
        return OnnxPredictModel(exported)
    model = read_model(checkpoint, model_name, pretrained, visual_prompt=visual_prompt, num_frames=num_frames, arch=arch)
    return exported_on_the_fly(model, precision, device, threads)


def exported_on_the_fly(model: torch.nn.Module, precision: str | None, device="cpu", threads: int | None = None) -> OnnxPredictModel:
    """A torch model (fp32, as read) run by ONNX Runtime from its export in the cache."""
    precision = resolve_onnx_precision(precision, device)
    return OnnxPredictModel(ExportedModel(cached_export(model, model.config.num_frames, precision), precision, threads))
