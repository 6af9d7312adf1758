import copy
import json
import platform
import resource

import pytest
import torch
import torch.nn.functional as F

import actionclip
from actionclip.host import devices
from actionclip.host.devices import resolve_precision
from actionclip.host.memory import retain_freed_memory
from actionclip.models.precision import prepare_for_inference
from conftest import random_video
from forked import Forked


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


@pytest.mark.parametrize("arch, prompt", [("actionclip", p) for p in actionclip.VISUAL_PROMPTS] + [("xclip", "Transf")])
def test_bf16_weights_keep_embeddings_close_and_in_fp32(arch, prompt):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, arch=arch, num_frames=8, seed=0).eval()
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    assert low.video.visual.conv1.weight.dtype == torch.bfloat16
    if arch == "actionclip":  # the temporal module runs once per video: fp32, never rounded to bf16
        exact = prepare_for_inference(copy.deepcopy(model), "fp32").video.temporal.state_dict()
        assert all(p.dtype == torch.float32 for p in low.video.temporal.parameters())
        assert all(torch.equal(value, exact[key]) for key, value in low.video.temporal.state_dict().items())
    norms = [m for m in low.modules() if isinstance(m, torch.nn.LayerNorm) and not isinstance(low, torch.nn.TransformerEncoderLayer)]
    assert any(m.weight.dtype == torch.float32 for m in norms)
    video = random_video(batch=3)
    tokens = model.tokenize(["a video of arm wrestling", "swimming", "playing guitar"])
    with torch.no_grad():
        full_video, low_video = model.encode_video(video), low.encode_video(video)
        full_text, low_text = model.encode_text(tokens), low.encode_text(tokens)
    assert low_video.dtype == torch.float32 and low_text.dtype == torch.float32
    assert F.cosine_similarity(full_video, low_video).min() >= 0.999
    # The text tower runs once per label set: it stays fp32 (QuickGELU folded), so its features barely move.
    assert all(p.dtype == torch.float32 for p in low.text.parameters())
    torch.testing.assert_close(low_text, full_text, atol=1e-4, rtol=1e-4)


def test_bf16_predictions_agree_with_fp32():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0).eval()
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    video = random_video(batch=16, seed=3)
    labels = ["arm wrestling", "swimming", "playing guitar", "cooking", "dancing"]
    full_probs, low_probs = model.classify(video, labels), low.classify(video, labels)
    assert (full_probs.argmax(1) == low_probs.argmax(1)).float().mean() >= 0.9
    assert (full_probs - low_probs).abs().max() < 0.02


def test_predict_and_benchmark_take_a_precision(tmp_path, capsys):
    from actionclip.benchmark.throughput import benchmark
    from actionclip.cli.main import main
    from actionclip.data.synthetic import make_synthetic_dataset

    written = make_synthetic_dataset(tmp_path / "v", shapes=["circle"], colours=["red"], motions=["left"], clips_per_class=1)
    actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "m")
    assert (
        main(
            [
                "predict",
                written.samples[0].path,
                "--labels",
                "a,b",
                "--checkpoint",
                str(tmp_path / "m"),
                "--precision",
                "bf16",
                "--json",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip())
    assert result["labels"] and abs(sum(result["scores"]) - 1) < 1e-3
    result = benchmark("test-tiny", frames=2, batch_size=1, iterations=1, precision="bf16", device="cpu")
    assert result["precision"] == "bf16" and result["peak_gflops"] > 0
    assert result["achieved_gflops"] == pytest.approx(2 * result["gflops_per_video"] * result["videos_per_s"])


def test_a_second_predict_with_the_same_labels_does_not_run_the_text_encoder(tmp_path):
    from actionclip.data.synthetic import make_synthetic_dataset
    from actionclip.inference.classify import iter_predictions

    written = make_synthetic_dataset(tmp_path / "v", shapes=["circle"], colours=["red"], motions=["left"], clips_per_class=1)
    video = written.samples[0].path
    model = actionclip.create_model("test-tiny", seed=0).eval()
    calls = []
    model.text.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    labels = ["arm wrestling", "swimming"]
    first = list(iter_predictions(model, video, labels, workers=0, text_cache=tmp_path / "cache"))
    assert calls == [32]  # 16 templates x 2 labels
    second = list(iter_predictions(model, video, labels, workers=0, text_cache=tmp_path / "cache"))
    assert calls == [32] and second == first
    list(iter_predictions(model, video, ["arm wrestling", "cooking"], workers=0, text_cache=tmp_path / "cache"))
    assert calls == [32, 32]  # other labels: encoded
    with torch.no_grad():
        model.text.ln_final.bias.add_(0.1)
    list(iter_predictions(model, video, labels, workers=0, text_cache=tmp_path / "cache"))
    assert calls == [32, 32, 32]  # other weights: encoded again
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3


@pytest.mark.parametrize("arch, prompt", [("actionclip", "Transf"), ("actionclip", "Transf_cls"), ("xclip", "Transf")])
def test_prepared_fp32_model_computes_the_same_function(arch, prompt):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, arch=arch, num_frames=8, seed=0, quick_gelu=True).eval()
    quick = [name for name, m in model.named_modules() if type(m).__name__ == "QuickGELU"]
    prepared = prepare_for_inference(copy.deepcopy(model), "fp32")
    # CLIP's blocks (a vision and a text one in test-tiny), and the temporal module's or X-CLIP's.
    assert len(quick) >= 2
    assert [name for name, m in prepared.named_modules() if isinstance(m, torch.nn.SiLU) and m.inplace] == quick
    weight = quick[0].replace("gelu", "c_fc.weight")
    assert torch.allclose(prepared.state_dict()[weight], 1.702 * model.state_dict()[weight])
    video = random_video(batch=2)
    tokens = model.tokenize(["a video of arm wrestling", "swimming"])
    with torch.inference_mode():
        assert torch.allclose(prepared.encode_video(video), model.encode_video(video), atol=1e-5)
        assert torch.allclose(prepared.encode_text(tokens), model.encode_text(tokens), atol=1e-5)


def test_a_prepared_model_is_not_saved(tmp_path):
    model = prepare_for_inference(actionclip.create_model("test-tiny", seed=0), "fp32")
    with pytest.raises(ValueError, match="prepared for inference"):
        actionclip.save(model, tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()


def _page_faults(mode):
    """Prints the page faults of allocating and filling a 64 MiB block again and again, with glibc's defaults or
    with freed memory retained."""
    if mode == "retain":
        assert retain_freed_memory()
    faults = []
    for _ in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # The first rounds grow the heap (a small allocation can take the start of a freed block, so two blocks may end up
    # taking turns; how many rounds that takes depends on the heap's history: up to seven here); after that, with the
    # setting, the blocks are reused.
    print(max(faults[-3:]))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_memory_is_reused_without_page_faults(tmp_path):
    # A new process each, as a long-running one's heap history decides where a block lands.
    def faults(mode: str) -> int:
        process = Forked(_page_faults, mode, output=tmp_path / mode)
        assert process.wait() == 0, process.stderr
        return int(process.stdout)

    assert faults("default") >= 16384  # a fresh mapping: each of its 4 KiB pages faults in
    assert faults("retain") < 1000


@pytest.mark.parametrize("bias", [False, True])
def test_patch_embedding_as_a_matmul_is_the_convolution(bias):
    from actionclip.models.precision import PatchEmbeddingMatmul

    conv = torch.nn.Conv2d(3, 16, kernel_size=8, stride=8, bias=bias)
    fast = copy.deepcopy(conv)
    fast.__class__ = PatchEmbeddingMatmul
    images = torch.randn(5, 3, 35, 41)  # the convolution drops the 3 and 1 pixels past the last patch
    with torch.no_grad():
        expected, out = conv(images), fast(images)
    assert out.shape == expected.shape == (5, 16, 4, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # open_clip flattens the grid into tokens: with channels-last memory that is a view, not a copy.
    assert out.reshape(5, 16, -1).permute(0, 2, 1).is_contiguous()


def test_prepare_for_inference_swaps_only_the_vits_patch_embedding():
    from actionclip.models.precision import PatchEmbeddingMatmul

    model = prepare_for_inference(actionclip.create_model("test-tiny", seed=0), "fp32")
    assert type(model.video.visual.conv1) is PatchEmbeddingMatmul
    assert sum(isinstance(m, PatchEmbeddingMatmul) for m in model.modules()) == 1


TINY_RESNET = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
actionclip.register_model_config("test-tiny-resnet", TINY_RESNET)


def _with_trained_batch_norm_statistics(model):
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.1)
            with torch.no_grad():
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
    return model.eval()


def test_batch_norms_fold_into_the_resnets_convolutions():
    model = _with_trained_batch_norm_statistics(actionclip.create_model("test-tiny-resnet", visual_prompt="MeanP", num_frames=4, seed=0))
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert norms == 3 + 4 * 3 + 4  # the stem's, each Bottleneck's three and its downsample's
    prepared = prepare_for_inference(copy.deepcopy(model), "fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    assert prepared.video.visual.conv1.bias is not None
    video = random_video(batch=2, frames=4)
    with torch.inference_mode():
        expected, folded = model.encode_video(video), prepared.encode_video(video)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-4)
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    with torch.inference_mode():
        assert F.cosine_similarity(low.encode_video(video), expected).min() >= 0.999


def test_a_classifier_head_keeps_fp32_logits():
    model = actionclip.create_model("test-tiny", visual_prompt="MeanP", arch="unimodal", num_classes=5, seed=0).eval()
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    assert low.head.weight.dtype == torch.float32 and low.video.visual.conv1.weight.dtype == torch.bfloat16
    video = random_video(batch=4)
    with torch.inference_mode():
        features = low.encode_video(video)
        # The logits are exactly the fp32 head over the (fp32) bf16-model features, not rounded to bf16.
        torch.testing.assert_close(low(video), model.head(features), atol=0, rtol=0)


def _fake_gpus(monkeypatch, native: dict[int, bool]):
    """Simulated GPUs: index -> native bf16 (True: Ampere and later; False: a V100/T4, which only emulates it)."""
    current = [0]

    class Device:
        def __init__(self, device):
            self.index = torch.device(device).index

        def __enter__(self):
            self.previous, current[0] = current[0], current[0] if self.index is None else self.index

        def __exit__(self, *exc):
            current[0] = self.previous

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native[current[0]] or including_emulation  # torch counts emulation unless told not to

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


def test_auto_precision_gives_fp16_to_gpus_that_only_emulate_bf16(monkeypatch):
    from actionclip.engine.train import autocast_dtype

    _fake_gpus(monkeypatch, {0: False, 1: False})
    assert resolve_precision("auto", "cuda") == "fp16"
    assert autocast_dtype("auto", torch.device("cuda", 0)) == torch.float16
    _fake_gpus(monkeypatch, {0: True})
    assert resolve_precision("auto", "cuda") == "bf16"
    assert autocast_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16


def test_auto_precision_looks_at_the_target_gpu_not_the_current_one(monkeypatch):
    from actionclip.engine.train import autocast_dtype

    _fake_gpus(monkeypatch, {0: False, 1: True})  # the current device 0 is a V100, device 1 an A100
    assert resolve_precision("auto", "cuda:1") == "bf16"
    assert autocast_dtype("auto", torch.device("cuda", 1)) == torch.bfloat16
    assert resolve_precision("auto", "cuda:0") == "fp16"
