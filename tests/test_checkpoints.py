import dataclasses
import json
import re
import shutil
from typing import Tuple

import open_clip
import pytest
import torch
from open_clip.model import CLIPVisionCfg
from safetensors.torch import save_file
from torch import nn

import actionclip
from actionclip import CheckpointError
from actionclip.checkpoints import ours as checkpoints
from actionclip.checkpoints.sources import read_model
from actionclip.cli.main import main
from actionclip.host import files
from actionclip.weights.torchscript import read_torchscript_state_dict
from conftest import TINY, random_video


@pytest.mark.parametrize("prompt", ["Transf", "Joint", "Transf_cls"])
def test_save_load_round_trip_is_bit_identical(tmp_path, prompt):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, num_frames=4, seed=0).eval()
    actionclip.save(model, tmp_path / "ckpt")
    loaded = actionclip.load(tmp_path / "ckpt")
    video = random_video(batch=2, frames=4)
    tokens = model.tokenize(["a video of swimming", "jumping"])
    with torch.no_grad():
        assert torch.equal(model.encode_video(video), loaded.encode_video(video))
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))
    assert loaded.config == model.config
    assert sorted((tmp_path / "ckpt").iterdir()) == [tmp_path / "ckpt" / "config.json", tmp_path / "ckpt" / "model.safetensors"]


def test_saving_onto_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = actionclip.create_model("test-tiny", visual_prompt="MeanP", num_frames=4, seed=0)
    actionclip.save(model, tmp_path / "last")
    before = {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()}
    real_open = open
    monkeypatch.setattr(files, "open", lambda path, mode="r": real_open("/dev/full", mode), raising=False)
    with pytest.raises(OSError, match=r"no space left on device while writing .*last/model\.safetensors"):
        actionclip.save(model, tmp_path / "last")
    assert {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()} == before  # no partial file, nothing replaced


def test_unimodal_round_trip(tmp_path):
    model = actionclip.create_model("test-tiny", visual_prompt="MeanP", arch="unimodal", num_classes=4, seed=0).eval()
    actionclip.save(model, tmp_path)
    loaded = actionclip.load(tmp_path)
    assert isinstance(loaded, actionclip.UnimodalClassifier)
    video = random_video(batch=1)
    with torch.no_grad():
        assert torch.equal(model(video), loaded(video))


def _edit_config(directory, edit):
    path = directory / "config.json"
    content = json.loads(path.read_text())
    edit(content["config"])
    path.write_text(json.dumps(content))


def test_a_unimodal_checkpoint_builds_no_text_tower_whatever_its_text_config(tmp_path):
    model = actionclip.create_model("test-tiny", visual_prompt="MeanP", arch="unimodal", num_classes=3, seed=0).eval()
    actionclip.save(model, tmp_path)
    _edit_config(tmp_path, lambda config: config["clip"]["text_cfg"].update(width=10**9, layers=10**6))
    video = random_video(batch=1)
    with torch.no_grad():
        assert torch.equal(actionclip.load(tmp_path)(video), model(video))


def _never_built(*args, **kwargs):
    raise AssertionError("a model was built from a config that does not fit its weights")


def test_loading_into_wrong_arch_names_the_keys(tmp_path, monkeypatch):
    actionclip.save(actionclip.create_model("test-tiny", visual_prompt="MeanP", seed=0), tmp_path)
    _edit_config(tmp_path, lambda config: config.update(visual_prompt="Conv1D"))
    monkeypatch.setattr(checkpoints, "build_model", _never_built)
    with pytest.raises(
        CheckpointError,
        match=rf"^{re.escape(str(tmp_path))}/model\.safetensors does not fit the model {re.escape(str(tmp_path))}/config\.json "
        r"describes: missing keys: video\.temporal\.shift\.weight$",
    ):
        actionclip.load(tmp_path)


@pytest.fixture(scope="module")
def transf_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("transf")
    actionclip.save(actionclip.create_model("test-tiny", num_frames=4, seed=0), directory)
    return directory


# Hand edits of a saved Transf checkpoint's config.json (ViT width 64, 1 vision and 1 text block, 6 temporal blocks)
# and the one line that names each.
CONFIG_MISTAKES = {
    "temporal_layers": (lambda c: c.update(temporal_layers=10**6), "config.json: temporal_layers is 1000000 but {weights} has 6 Transf temporal blocks"),
    "vision width": (lambda c: c["clip"]["vision_cfg"].update(width=10**9),
                     "config.json: vision_cfg.width is 1000000000 but {weights} has 64 (video.visual.conv1.weight: [64, 3, 16, 16])"),
    "vision key": (lambda c: c["clip"]["vision_cfg"].update(depth=12), "config.json: clip.vision_cfg: unknown key(s) depth; known: {vision_keys}"),
    "top key": (lambda c: c.update(dropout=0.1), "config.json: unknown key(s) dropout; known: {config_keys}"),
    "text layers": (lambda c: c["clip"]["text_cfg"].update(layers=3), "config.json: text_cfg.layers is 3 but {weights} has 1 text blocks"),
    "text width": (lambda c: c["clip"]["text_cfg"].update(width=128), "config.json: text_cfg.width is 128 but {weights} has 64 (text.ln_final.weight: [64])"),
    "vocab": (lambda c: c["clip"]["text_cfg"].update(vocab_size=10**9),
              "config.json: text_cfg.vocab_size is 1000000000 but {weights} has 49408 (text.token_embedding.weight: [49408, 64])"),
    "embed_dim": (lambda c: c["clip"].update(embed_dim=2**40), "config.json: embed_dim is 1099511627776 but {weights} has 64 (text.text_projection: [64, 64])"),
    "image_size": (lambda c: c["clip"]["vision_cfg"].update(image_size=10**6),
                   "config.json: vision_cfg.image_size is 1000000 but {weights} has 32 (video.visual.positional_embedding: [5, 64])"),
    "max_frames": (lambda c: c.update(max_frames=10**9),
                   "config.json: max_frames is 1000000000 but {weights} has 77 (video.temporal.frame_position_embeddings.weight: [77, 64])"),
    "heads": (lambda c: c.update(temporal_heads=7), "config.json: temporal_heads is 7, which does not divide embed_dim 64"),
    "type": (lambda c: c.update(num_frames="8"), "config.json: num_frames: expected an integer, got '8'"),
    "frames": (lambda c: c.update(num_frames=100), "config.json: describes no model that can be built (num_frames=100 exceeds Transf's max_frames=77)"),
    "mlp_ratio": (lambda c: c["clip"]["vision_cfg"].update(mlp_ratio=10**6),
                  ("model.safetensors does not fit the model {config} describes: shape mismatches: video.visual.transformer.resblocks.0.mlp."
                   "c_fc.weight: file (256, 64) vs model (64000000, 64), video.visual.transformer.resblocks.0.mlp.c_fc.bias: file (256,) vs "
                   "model (64000000,), video.visual.transformer.resblocks.0.mlp.c_proj.weight: file (64, 256) vs model (64, 64000000)")),
}  # fmt: skip


@pytest.mark.parametrize("mistake", CONFIG_MISTAKES)
def test_a_config_that_does_not_fit_its_weights_is_refused_in_one_line_before_building(transf_checkpoint, tmp_path, monkeypatch, mistake):
    edit, message = CONFIG_MISTAKES[mistake]
    directory = shutil.copytree(transf_checkpoint, tmp_path / "model")
    _edit_config(directory, edit)
    monkeypatch.setattr(checkpoints, "build_model", _never_built)  # the only model built is on the meta device
    with pytest.raises(CheckpointError) as error:
        actionclip.load(directory)
    keys = {
        "vision_keys": ", ".join(sorted(f.name for f in dataclasses.fields(CLIPVisionCfg))),
        "config_keys": ", ".join(sorted(f.name for f in dataclasses.fields(actionclip.ActionCLIPConfig))),
    }
    assert str(error.value) == f"{directory}/" + message.format(
        weights=directory / "model.safetensors", config=directory / "config.json", **keys
    )


def test_a_frame_count_that_no_weight_pins_down_is_bounded(tmp_path):
    actionclip.save(actionclip.create_model("test-tiny", visual_prompt="MeanP", seed=0), tmp_path)
    _edit_config(tmp_path, lambda config: config.update(num_frames=10**9))
    with pytest.raises(CheckpointError) as error:
        actionclip.load(tmp_path)
    assert str(error.value) == f"{tmp_path}/config.json: num_frames is 1000000000, more than 1024 frames per clip"


def test_predict_names_a_config_mistake_in_one_line(transf_checkpoint, tmp_path, capsys, monkeypatch):
    directory = shutil.copytree(transf_checkpoint, tmp_path / "model")
    _edit_config(directory, lambda config: config.update(temporal_layers=10**6))
    monkeypatch.setattr(checkpoints, "build_model", _never_built)
    assert main(["predict", str(tmp_path / "clip.mp4"), "--labels", "a,b", "--checkpoint", str(directory), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"error: {directory}/config.json: temporal_layers is 1000000 but {directory}/model.safetensors has 6 Transf temporal blocks\n"
    )


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    actionclip.save(actionclip.create_model("test-tiny", visual_prompt="MeanP", seed=0), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        actionclip.load(tmp_path)
    with pytest.raises(CheckpointError, match="not an actionclip checkpoint directory"):
        actionclip.load(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid config"):
        actionclip.load(tmp_path)
    text_file = tmp_path / "notes.pt"
    text_file.write_text("hello, I am not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable checkpoint"):
        actionclip.create_model(None, pretrained=str(text_file))
    with pytest.raises(CheckpointError, match="notes.pt: not a readable checkpoint"):
        actionclip.from_official_checkpoint(text_file, "Transf")


def _tiny_clip():
    torch.manual_seed(3)
    return open_clip.CLIP(**TINY).eval()


def _features(clip_or_model, video, tokens):
    with torch.no_grad():
        if isinstance(clip_or_model, actionclip.ActionCLIP):
            return clip_or_model.video.encode_frames(video).flatten(0, 1), clip_or_model.encode_text(tokens)
        return clip_or_model.encode_image(video.flatten(0, 1)), clip_or_model.encode_text(tokens)


class _OpenAIArchive(nn.Module):
    """The layout of OpenAI's released TorchScript files: CLIP's parameters at the top level plus three
    integer buffers that are not weights."""

    def __init__(self, clip):
        super().__init__()
        for name in ("visual", "transformer", "token_embedding", "ln_final"):
            setattr(self, name, getattr(clip, name))
        self.positional_embedding = clip.positional_embedding
        self.text_projection = clip.text_projection
        self.logit_scale = clip.logit_scale
        self.register_buffer("input_resolution", torch.tensor(32))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, image):
        return self.visual(image)


def test_openai_torchscript_and_state_dict_files_load_with_inferred_architecture(tmp_path):
    clip = _tiny_clip()
    archive = tmp_path / "ViT-tiny.pt"
    torch.jit.trace(_OpenAIArchive(clip), torch.randn(1, 3, 32, 32)).save(str(archive))
    state_dict_file = tmp_path / "openai_state_dict.pt"
    torch.save(clip.state_dict(), state_dict_file)
    video, tokens = random_video(batch=1, frames=2), open_clip.tokenize(["a video of a dog", "surfing"])
    expected = _features(clip, video, tokens)
    for path in (archive, state_dict_file):
        model = actionclip.create_model(None, pretrained=str(path), visual_prompt="MeanP", num_frames=2).eval()
        assert model.config.clip["quick_gelu"] is True
        assert model.config.clip["vision_cfg"]["width"] == 64 and model.config.clip["text_cfg"]["layers"] == 1
        for ours, theirs in zip(_features(model, video, tokens), expected):
            assert torch.allclose(ours, theirs, atol=1e-5)
    named = actionclip.create_model("test-tiny", pretrained=str(archive), num_frames=2).eval()
    assert torch.allclose(_features(named, video, tokens)[0], expected[0], atol=1e-5)


def test_open_clip_training_checkpoint_and_safetensors_load(tmp_path):
    clip = _tiny_clip()
    training_ckpt = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, training_ckpt)
    safetensors_file = tmp_path / "open_clip_model.safetensors"
    save_file(clip.state_dict(), str(safetensors_file))
    video, tokens = random_video(batch=1, frames=2), open_clip.tokenize(["a cat", "a video of cooking"])
    expected = _features(clip, video, tokens)
    for path in (training_ckpt, safetensors_file):
        model = actionclip.create_model("test-tiny", pretrained=str(path), num_frames=2).eval()
        for ours, theirs in zip(_features(model, video, tokens), expected):
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_file_of_the_wrong_architecture_names_the_mismatch(tmp_path):
    other = dict(TINY, vision_cfg=dict(TINY["vision_cfg"], layers=2))
    path = tmp_path / "two_layers.pt"
    torch.save(open_clip.CLIP(**other).state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=rf"^{re.escape(str(path))} does not fit the model: unexpected keys: visual\.transformer\.resblocks\.1\.\S+"
        r"(, visual\.transformer\.resblocks\.1\.\S+)*, \.\.\. \(12 in all\)$",
    ):
        actionclip.create_model("test-tiny", pretrained=str(path))


def test_random_init_of_one_tower_keeps_the_other(tmp_path):
    clip = _tiny_clip()
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    pretrained = actionclip.create_model("test-tiny", pretrained=str(path), seed=0)
    random_vision = actionclip.create_model("test-tiny", pretrained=str(path), init_vision="random", seed=0)
    random_text = actionclip.create_model("test-tiny", pretrained=str(path), init_text="random", seed=0)
    assert not torch.equal(random_vision.video.visual.conv1.weight, pretrained.video.visual.conv1.weight)
    assert torch.equal(random_vision.text.token_embedding.weight, pretrained.text.token_embedding.weight)
    assert torch.equal(random_text.video.visual.conv1.weight, pretrained.video.visual.conv1.weight)
    assert not torch.equal(random_text.text.token_embedding.weight, pretrained.text.token_embedding.weight)
    assert torch.equal(random_text.logit_scale, pretrained.logit_scale)


def test_unknown_tag_fails_clearly():
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag"):
        actionclip.create_model("ViT-B-32", pretrained="no-such-tag")


class _WritesOnLoad(nn.Module):
    """A scripted module whose TorchScript ``__setstate__`` creates a file when its archive is loaded: what a
    malicious ``.pt`` does to whatever calls ``torch.jit.load`` on it."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.marker = torch.zeros(8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.marker = torch.from_file(self.path, True, 8, dtype=torch.uint8)


def test_no_loader_runs_the_code_in_a_torchscript_archive(tmp_path, capsys):
    written, evil = tmp_path / "written", tmp_path / "evil.pt"
    torch.jit.script(_WritesOnLoad(str(written))).save(str(evil))
    hf = tmp_path / "hf_xclip"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "xclip"}))
    shutil.copy(evil, hf / "pytorch_model.bin")
    loaders = [
        lambda: actionclip.create_model(None, pretrained=str(evil)),
        lambda: actionclip.create_model("test-tiny", pretrained=str(evil)),
        lambda: actionclip.from_official_checkpoint(evil, visual_prompt="Transf"),
        lambda: read_model(evil),  # a training config's model.checkpoint
        lambda: actionclip.from_hf_xclip(hf),
    ]
    for load in loaders:
        with pytest.raises(CheckpointError, match="does not contain a state dict|not an official ActionCLIP checkpoint"):
            load()
    assert main(["predict", str(tmp_path / "clip.mp4"), "--labels", "a,b", "--checkpoint", str(evil)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {evil}")
    assert not written.exists()
    torch.jit.load(str(evil))  # the archive is malicious: torch's own loader runs its __setstate__
    assert written.exists()


class _Payload:
    def __reduce__(self):
        return print, ("this ran while loading",)


def test_a_refused_pickle_is_named_without_advice_to_load_it_unsafely(tmp_path):
    path = tmp_path / "payload.pt"
    torch.save({"state_dict": _Payload()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"payload\.pt: refused, it holds more than weights: Unsupported global: "
        r"GLOBAL (builtins\.)?print was not an allowed global",
    ) as error:
        actionclip.create_model("test-tiny", pretrained=str(path))
    assert "weights_only=False" not in str(error.value)


def test_a_torchscript_archive_read_as_data_gives_torchs_own_state_dict(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(_tiny_clip().half()).save(str(path))  # OpenAI's archives hold fp16 weights
    ours, theirs = read_torchscript_state_dict(path), torch.jit.load(str(path)).state_dict()
    assert ours.keys() == theirs.keys() and len(ours) > 20
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
