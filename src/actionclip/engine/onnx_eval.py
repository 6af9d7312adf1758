"""``actionclip eval`` with ONNX Runtime: an export directory as the checkpoint, or ``--runtime onnx`` with any other
checkpoint or the config's model, exported on the fly into the cache as ``predict`` does. The engine evaluates the
:class:`actionclip.inference.onnx_backend.OnnxPredictModel` built here as it evaluates a torch model: same data, checks
(classes, frames, image size) and test settings. It runs on the CPU; under torchrun each process runs its own
session on its share of the videos, with its share of the cores.
"""

from __future__ import annotations

import os


def onnx_evaluation_model(config, checkpoint: str | None, runtime: str, precision: str | None):
    """The ONNX Runtime model ``actionclip eval`` evaluates, or None to evaluate the torch model. ``precision``: the
    command line's (None: an export directory's own, else ``eval.precision``; fp32, int8 or auto). Sets
    ``train.device`` to the CPU when it was left to choose."""
    from actionclip.engine.run import model_from_config
    from actionclip.inference import onnx_backend

    checkpoint = checkpoint or config.model.checkpoint
    if not onnx_backend.wants_onnx(checkpoint, runtime):
        if precision == "int8":
            raise ValueError("--precision int8 is ONNX Runtime's: give an export directory as --checkpoint, or --runtime onnx")
        return None

    export_dir = onnx_backend.is_export_dir(checkpoint)
    if config.train.device not in (None, "cpu"):
        what = f"{checkpoint} (an export directory)" if export_dir else "--runtime onnx"
        raise ValueError(f"{what} runs with ONNX Runtime on the CPU but train.device is {config.train.device}: set train.device=cpu")
    config.train.device = "cpu"
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    threads = max(1, (os.cpu_count() or 1) // local_processes) if local_processes > 1 else None
    if export_dir:
        return onnx_backend.load_onnx_model(checkpoint, precision=precision, threads=threads)
    config.model.checkpoint = checkpoint
    return onnx_backend.exported_on_the_fly(model_from_config(config.model), precision or config.eval.precision, "cpu", threads)
