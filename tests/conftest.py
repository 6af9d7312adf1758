import os
import shutil
import tempfile

import pytest
import torch

import actionclip
from actionclip.benchmark import onnx_throughput, throughput

# A tiny OpenAI-style CLIP (ViT, QuickGELU, 77-token BPE text tower) so the suite runs in minutes on 2 cores.
TINY = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
actionclip.register_model_config("test-tiny", TINY)
# pytest-xdist runs a worker per core: a second OpenMP thread per worker (and per subprocess a test starts) only
# spins against the other workers, about a third more CPU time for the same suite.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"
# `actionclip benchmark` times dense matmuls for the machine's peak: at 2048 a side, seconds of CPU per run; no test
# checks the peak's value.
throughput.PEAK_SIZE = onnx_throughput.PEAK_SIZE = 256


def pytest_configure(config):
    # `actionclip predict` caches label text features; keep the tests' cache out of the home directory. Here rather
    # than on import, as the processes that tests fork (tests/forked.py) import this module too.
    os.environ["ACTIONCLIP_CACHE"] = tempfile.mkdtemp(prefix="actionclip-test-cache-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop("ACTIONCLIP_CACHE"), ignore_errors=True)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def assert_one_line_error(code, out, err, message):
    """A user's mistake: exit code 2, nothing on stdout, one line on stderr that starts "error: " and says ``message``."""
    assert (code, out, len(err.splitlines())) == (2, "", 1) and err.startswith("error: ") and message in err, err


def random_video(batch=2, frames=8, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator)


# The labels whose text features the shared exports carry.
EXPORT_LABELS = ["arm wrestling", "playing guitar", "swimming", "applying eye makeup"]


def tiny_model(variant="Transf"):
    """The tiny ActionCLIP with the visual prompt ``variant``, or the tiny X-CLIP for ``variant="xclip"``."""
    if variant == "xclip":
        return actionclip.create_model("test-tiny", arch="xclip", seed=0).eval()
    return actionclip.create_model("test-tiny", visual_prompt=variant, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_export(variant)``: the tiny model of ``variant`` and its int8 export with the text features of
    EXPORT_LABELS, made once per test process (torch.export takes seconds of CPU per model). Tests edit copies."""
    from actionclip.export.directory import export_model

    made = {}

    def export(variant="Transf"):
        if variant not in made:
            model = tiny_model(variant)
            made[variant] = model, export_model(model, tmp_path_factory.mktemp(f"export_{variant}"), "int8", labels=EXPORT_LABELS)
        return made[variant]

    return export
