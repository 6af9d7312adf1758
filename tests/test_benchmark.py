import json
import time

import numpy as np
import pytest
import torch

import actionclip
from actionclip.benchmark.throughput import benchmark, build_random_model, count_parameters, count_video_gmacs, timed
from actionclip.cli.main import main
from actionclip.data import write_video

# Table 7 of the paper: ActionCLIP with the Transf prompt, 8 frames.
PAPER = {"ViT-B-32": (144.1e6, 35.4), "ViT-B-16": (141.7e6, 140.8)}


def assert_near_paper(result, model_name):
    params, gflops = PAPER[model_name]
    assert abs(result["params"] / params - 1) < 0.02, result["params"]
    assert abs(result["gflops_per_video"] / gflops - 1) < 0.10, result["gflops_per_video"]


def test_vit_b32_matches_table_7():
    result = benchmark("ViT-B-32", "Transf", frames=8, batch_size=1, device="cpu", iterations=1)
    assert_near_paper(result, "ViT-B-32")
    assert result["params_all"] == result["params"] + result["params_token_embedding"] == 170_231_041
    assert result["params_token_embedding"] == 49408 * 512
    assert result["image_size"] == 224 and result["visual_prompt"] == "Transf" and result["device"] == "cpu"
    assert result["videos_per_s"] > 0


def test_vit_b16_counts_match_table_7():
    model = build_random_model("ViT-B-16", "Transf", 8, device="meta")
    assert_near_paper({**count_parameters(model), "gflops_per_video": count_video_gmacs(model, 8)}, "ViT-B-16")


def test_tiny_model_counts_by_hand():
    # test-tiny: 32 px frames, 16 px patches -> 4 patches + class token; width 64; one layer; 6 Transf layers of width
    # 64 over 8 frame tokens. Multiply-accumulates per frame and per video:
    tokens, width = 5, 64
    block = lambda n: n * width * 3 * width + 2 * n * n * width + n * width * width + 2 * n * width * 4 * width  # noqa: E731
    per_frame = 4 * (3 * 16 * 16) * width + block(tokens) + width * 64  # patch conv, the block, the projection
    expected = 8 * per_frame + 6 * block(8)
    model = build_random_model("test-tiny", "Transf", 8, device="meta")
    assert count_video_gmacs(model, 8) * 1e9 == expected == 6_005_760
    real = actionclip.create_model("test-tiny", visual_prompt="Transf").eval()
    # The meta-device count is the count of the real model.
    assert count_video_gmacs(real, 8) == count_video_gmacs(model, 8)
    assert count_parameters(model) == count_parameters(real)
    assert count_parameters(real)["params_all"] == sum(p.numel() for p in real.parameters())
    assert count_parameters(real)["params_video"] == sum(p.numel() for p in real.video.parameters())


@pytest.fixture
def video_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.avi"):
        write_video(tmp_path / name, rng.integers(0, 256, (10, 48, 64, 3), dtype=np.uint8))
    return tmp_path


@pytest.mark.parametrize("arch", ["actionclip", "xclip"])
def test_cli_json_schema(arch, video_folder, capsys):
    code = main(
        [
            "benchmark",
            "--model",
            "test-tiny",
            "--arch",
            arch,
            "--frames",
            "8",
            "--batch-size",
            "3",
            "--iterations",
            "2",
            "--device",
            "cpu",
            "--video",
            str(video_folder),
            "--workers",
            "1",
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    result = json.loads(out)  # exactly one JSON object
    assert code == 0
    assert isinstance(result["params"], int) and isinstance(result["gflops_per_video"], float)
    assert result["videos_per_s"] > 0 and result["videos_per_s_end_to_end"] > 0
    model = build_random_model("test-tiny", "Transf", 8, arch, "meta")
    assert result["params"] == count_parameters(model)["params"]
    assert result["gflops_per_video"] == count_video_gmacs(model, 8)
    assert (result["arch"], result["frames"], result["batch_size"], result["workers"]) == (arch, 8, 3, 1)
    assert result["visual_prompt"] == ("Transf" if arch == "actionclip" else None)


def test_cli_text_and_unreadable_video(tmp_path, capsys):
    assert main(["benchmark", "--model", "test-tiny", "--frames", "4", "--iterations", "1", "--device", "cpu"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].startswith("actionclip test-tiny, Transf, 4 frames at 32 px, batch 8, cpu")
    assert "GFLOPs per video  0.00" in out
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 1000)
    code = main(["benchmark", "--model", "test-tiny", "--iterations", "1", "--device", "cpu", "--video", str(corrupt), "--workers", "0"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith(f"error: {corrupt}: cannot open as a video")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "--device tpu: not a device name (cpu, cuda, cuda:1, mps, ...)"),
        (["--frames", "0"], "--frames must be >= 1, got 0"),
        (["--iterations", "0"], "--iterations must be >= 1, got 0"),
        (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
    ],
)
def test_cli_bad_device_and_numbers_are_one_line(args, message, capsys):
    code = main(["benchmark", "--model", "test-tiny", *args])
    out, err = capsys.readouterr()
    assert (code, out, err.splitlines()) == (2, "", [f"error: {message}"])


class _SimulatedCudaEvent:
    """A CUDA event on a device that takes 0.3 s to finish: waiting for it spins unless the event is blocking."""

    def __init__(self, blocking=False, **_):
        self.blocking = blocking

    def record(self, stream=None):
        pass

    def synchronize(self):
        _simulated_gpu_wait(self.blocking)


def _simulated_gpu_wait(blocking: bool) -> None:
    """Sleep 0.3 s, or spin until 0.3 s of CPU time are spent (however busy the machine is)."""
    if blocking:
        time.sleep(0.3)
        return
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass


def test_waiting_for_the_gpu_is_wall_time_not_cpu_time(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: _simulated_gpu_wait(blocking=False))
    monkeypatch.setattr(torch.cuda, "Event", _SimulatedCudaEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    wall, cpu = timed(lambda: None, torch.device("cuda"))
    assert wall >= 0.3 and cpu < 0.1, (wall, cpu)
