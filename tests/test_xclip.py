import json
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import XCLIPConfig, XCLIPModel

import actionclip
from actionclip import CheckpointError
from actionclip.checkpoints import ours as checkpoints
from actionclip.checkpoints import xclip as xclip_checkpoints
from actionclip.models.backbone import build_clip
from conftest import TINY, random_video

LABELS = ["arm wrestling", "playing guitar", "swimming"]
TOLERANCE = 1e-4


def tiny_hf_xclip(heads: int = 2, seed: int = 0, mit_intermediate_size: int = 256, text_intermediate_size: int = 256) -> XCLIPModel:
    """A tiny random ``XCLIPModel`` (8 frames) with every parameter perturbed, so that layer-norm gains, biases, alpha
    and the logit scale all differ from their init and a mix-up of any of them shows in the outputs."""
    torch.manual_seed(seed)
    config = XCLIPConfig(
        text_config={"hidden_size": 64, "intermediate_size": text_intermediate_size, "num_hidden_layers": 2, "num_attention_heads": heads},
        vision_config={
            "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": heads,
            "patch_size": 16, "image_size": 32, "num_frames": 8, "mit_hidden_size": 64, "mit_intermediate_size": mit_intermediate_size,
            "mit_num_hidden_layers": 1, "mit_num_attention_heads": heads,
        },
        projection_dim=64, prompt_layers=1, prompt_num_attention_heads=heads, prompt_alpha=1.0,
    )  # fmt: skip
    model = XCLIPModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    model = tiny_hf_xclip()
    directory = tmp_path_factory.mktemp("hf_xclip")
    model.save_pretrained(directory)
    return model, directory


def transformers_outputs(model: XCLIPModel, video: torch.Tensor, tokens: torch.Tensor):
    with torch.no_grad():
        output = model(input_ids=tokens, pixel_values=video)
        video_features = model.get_video_features(pixel_values=video).pooler_output
    return video_features, output


def assert_matches_transformers(model, hf: XCLIPModel, video: torch.Tensor) -> None:
    """Video features and logits of ``model`` against ``hf``'s, within the tolerance."""
    tokens = model.tokenize(LABELS)
    expected_video, expected = transformers_outputs(hf, video, tokens)
    with torch.no_grad():
        assert (model.encode_video(video) - expected_video).abs().max() <= TOLERANCE
        assert (model.logits(video, tokens) - expected.logits_per_video).abs().max() <= TOLERANCE


def test_matches_transformers_xclip(hf_model_dir):
    hf, directory = hf_model_dir
    model = actionclip.from_hf_xclip(directory)
    video = random_video(batch=2, frames=8)
    tokens = model.tokenize(["a video of swimming", "playing guitar", "arm wrestling with a friend at night"])
    expected_video, expected = transformers_outputs(hf, video, tokens)
    with torch.no_grad():
        video_features = model.encode_video(video)
        logits = model.logits(video, tokens)
        text_features = model.encode_text(tokens)
        expected_text = hf.get_text_features(input_ids=tokens).pooler_output
        without_prompts = model.logit_scale.exp() * F.normalize(video_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    assert (video_features - expected_video).abs().max() <= TOLERANCE
    assert (F.normalize(video_features, dim=-1) - expected.video_embeds).abs().max() <= TOLERANCE
    assert (text_features - expected_text).abs().max() <= TOLERANCE
    assert logits.shape == (2, 3)
    error = (logits - expected.logits_per_video).abs().max().item()
    print(f"logits_per_video against transformers' XCLIPModel: max abs error {error:.1e}")
    assert error <= TOLERANCE
    # The video-specific prompts change the logits far beyond the tolerance, so the comparison above checks them.
    assert (logits - without_prompts).abs().max() > 100 * TOLERANCE
    assert model.config.arch == "xclip" and model.config.mit_heads == 2 and model.config.prompt_heads == 2


def test_pytorch_model_bin_gives_the_same_model(hf_model_dir, tmp_path):
    hf, directory = hf_model_dir
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    from_bin = actionclip.from_hf_xclip(tmp_path).state_dict()
    from_safetensors = actionclip.from_hf_xclip(directory / "model.safetensors").state_dict()
    assert from_bin.keys() == from_safetensors.keys()
    assert all(torch.equal(from_bin[k], from_safetensors[k]) for k in from_bin)


def test_an_mit_mlp_that_is_not_four_times_its_width_matches_transformers(tmp_path):
    hf = tiny_hf_xclip(seed=2, mit_intermediate_size=100, text_intermediate_size=150)
    hf.save_pretrained(tmp_path / "hf")
    model = actionclip.from_hf_xclip(tmp_path / "hf")
    assert model.video.mit.resblocks[0].mlp.c_fc.out_features == 100 and model.config.mit_mlp_ratio == 100 / 64
    assert_matches_transformers(model, hf, random_video(batch=2, frames=8, seed=4))
    actionclip.save(model, tmp_path / "ours")  # the ratio travels with our format
    assert actionclip.load(tmp_path / "ours").config.mit_mlp_ratio == 100 / 64


def test_mlp_ratio_gives_open_clip_the_exact_width_back():
    for width, mlp_width in ((64, 256), (11, 15), (19, 53), (768, 3072), (768, 3000)):
        assert int(width * xclip_checkpoints.mlp_ratio(mlp_width, width)) == mlp_width


@pytest.mark.parametrize("frames", [1, 3, 8])
def test_shapes_for_any_frame_count(frames):
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=frames, seed=0)
    video = random_video(batch=2, frames=frames)
    tokens = model.tokenize(LABELS)
    assert model.encode_video(video).shape == (2, 64)
    logits = model.logits(video, tokens)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    probabilities = model.classify(video, LABELS)
    assert probabilities.shape == (2, 3)
    assert torch.allclose(probabilities.sum(-1), torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match=f"built for T={frames} frames, got T={frames + 1}"):
        model.encode_video(random_video(batch=1, frames=frames + 1))


def test_gradients_reach_every_trainable_parameter():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, prompt_layers=1, seed=0)
    logits = model(random_video(batch=2, frames=3), model.tokenize(LABELS))
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert all(p.requires_grad for p in model.parameters())
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def _block_calls_and_gradients(model, checkpointing: bool) -> tuple[int, dict]:
    """Forward calls of the first cross-frame block during one training step, and the gradients."""
    model.video.visual.set_grad_checkpointing(checkpointing)
    model.zero_grad()
    calls = []
    # A pre-hook: the recomputation during backward stops once it has the tensors it needs, before the block ends.
    handle = model.video.visual.transformer.resblocks[0].message_fc.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        F.cross_entropy(model(random_video(batch=2, frames=3), model.tokenize(LABELS)), torch.tensor([0, 2])).backward()
    finally:
        handle.remove()
    return len(calls), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_grad_checkpointing_recomputes_the_cross_frame_blocks_with_the_same_gradients():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, prompt_layers=1, seed=0)
    plain_calls, plain = _block_calls_and_gradients(model, False)
    checkpointed_calls, checkpointed = _block_calls_and_gradients(model, True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the block ran again during backward: its activations were not kept
    assert all(torch.equal(plain[n], checkpointed[n]) for n in plain)


def test_new_and_pretrained_parameters_split_like_the_original_recipe():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, seed=0)
    new = {id(p) for p in model.new_parameters()}
    pretrained = {id(p) for p in model.pretrained_parameters()}
    assert not new & pretrained and len(new) + len(pretrained) == len(list(model.parameters()))
    # The pretrained group is exactly CLIP; the new one is what the original trains at 10x ("message_", "mit", "prompts").
    assert sum(p.numel() for p in model.pretrained_parameters()) == sum(p.numel() for p in build_clip(TINY).parameters())
    for name, parameter in model.named_parameters():
        assert (id(parameter) in new) == bool(re.search(r"message_|mit|prompts", name)), name


def test_initialised_from_clip_with_only_the_new_modules_fresh(tmp_path):
    clip = build_clip(TINY)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    model = actionclip.create_model("test-tiny", pretrained=str(tmp_path / "clip.pt"), arch="xclip", num_frames=3)
    clip_state = clip.state_dict()
    for name, parameter in model.named_parameters():
        if id(parameter) not in {id(p) for p in model.new_parameters()}:
            clip_key = name[len("video.") :] if name.startswith("video.") else name[len("text.") :] if name.startswith("text.") else name
            assert torch.equal(parameter, clip_state[clip_key]), name
    alpha = model.prompts_generator.alpha
    assert torch.equal(alpha, torch.full_like(alpha, 0.1))  # the original's prompt alpha init


def test_freezing_keeps_the_new_modules_trainable():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, seed=0, freeze_vision=True, freeze_text=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if id(p) in {id(q) for q in model.new_parameters()}} | {"logit_scale"}
    logits = model(random_video(batch=2, frames=3), model.tokenize(LABELS))
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.video.visual.conv1.weight.grad is None and model.text.token_embedding.weight.grad is None
    assert model.video.visual.transformer.resblocks[0].message_fc.weight.grad is not None


def test_frames_communicate_only_through_message_tokens():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, seed=0)
    block = model.video.visual.transformer.resblocks[0]
    x = torch.randn(2 * 3, 5, 64)  # 2 videos x 3 frames, class token + 4 patches
    changed = x.clone()
    changed[1, 1:] += 1.0  # the patches of frame 1 of video 0
    with torch.no_grad():
        out, out_changed = block(x, 3), block(changed, 3)
        assert out.shape == x.shape  # the message token is dropped again
        assert torch.equal(out[3:], out_changed[3:])  # the other video is untouched
        assert torch.equal(out[0], out_changed[0])  # frame 0 reads frame 1's class token only, which did not change
        changed[1, 0] += 1.0  # now frame 1's class token, hence its message token
        out_changed = block(changed, 3)
        assert (out[0] - out_changed[0]).abs().max() > 1e-3 and (out[2] - out_changed[2]).abs().max() > 1e-3
        block.message_fc.weight.zero_()
        block.message_fc.bias.zero_()
        out, out_changed = block(x, 3), block(changed, 3)
        assert torch.allclose(out[0], out_changed[0], atol=1e-6)  # with constant messages frames are independent


def test_logits_from_cached_text_features_and_classify():
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, seed=0).train()
    video = random_video(batch=2, frames=3)
    templates = ["a video of {}", "{}, a human action"]
    with torch.no_grad():
        cached = model.encode_text(model.tokenize(LABELS))
        logits = model.eval().logits(video, model.tokenize(LABELS))
        assert torch.allclose(model.logits_from_text_features(video, cached), logits, atol=1e-6)
        per_template = [model.logits(video, model.tokenize([t.format(label) for label in LABELS])).softmax(-1) for t in templates]
    model.train()
    assert torch.allclose(model.classify(video, LABELS), logits.softmax(-1), atol=1e-6)  # label only, as X-CLIP
    assert torch.allclose(model.classify(video, LABELS, templates=templates), (per_template[0] + per_template[1]) / 2, atol=1e-6)
    assert model.training


def test_save_load_round_trip_is_bit_identical(tmp_path, hf_model_dir):
    created = actionclip.create_model("test-tiny", arch="xclip", num_frames=4, mit_layers=2, prompt_alpha=0.5, seed=0)
    for model, frames in ((created.eval(), 4), (actionclip.from_hf_xclip(hf_model_dir[1]), 8)):
        actionclip.save(model, tmp_path / str(frames))
        loaded = actionclip.load(tmp_path / str(frames))
        assert isinstance(loaded, actionclip.XCLIP) and loaded.config == model.config
        video, tokens = random_video(batch=2, frames=frames), model.tokenize(LABELS)
        with torch.no_grad():
            assert torch.equal(model.logits(video, tokens), loaded.logits(video, tokens))
    assert len(loaded.video.mit.resblocks) == 1 and len(created.video.mit.resblocks) == 2


def test_hf_import_errors_name_the_problem(hf_model_dir, tmp_path):
    _, directory = hf_model_dir
    with pytest.raises(CheckpointError, match="no config.json"):
        actionclip.from_hf_xclip(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"no weights \(model.safetensors or pytorch_model.bin\)"):
        actionclip.from_hf_xclip(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    for change, message in (
        ({"prompt_layers": 2}, r"config\.json: prompt_layers is 2 but \S+model\.safetensors has 1 prompt generator blocks$"),
        (
            {"text_config": {**config["text_config"], "intermediate_size": 128}},
            r"shape mismatches: text\.transformer\.resblocks\.0\.mlp\.c_fc\.weight: file \(256, 64\) vs model \(128, 64\)",
        ),
        ({"projection_dim": 32}, r"mit_hidden_size 64 \(the MIT runs at projection_dim 32\)"),
        ({"model_type": "clip"}, "model_type is 'clip', not 'xclip'"),
        ({"prompt_hidden_act": "relu"}, "unsupported X-CLIP settings: prompt_hidden_act 'relu'"),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError, match=message):
            actionclip.from_hf_xclip(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable checkpoint"):
        actionclip.from_hf_xclip(tmp_path)


def _never_built(*args, **kwargs):
    raise AssertionError("a model was built from a config that does not fit its weights")


def test_hf_config_numbers_are_checked_against_the_weights_before_building(hf_model_dir, tmp_path, monkeypatch):
    _, directory = hf_model_dir
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    monkeypatch.setattr(xclip_checkpoints, "XCLIP", _never_built)
    vision, text, weights = config["vision_config"], config["text_config"], tmp_path / "model.safetensors"
    for change, message in (
        (
            {"vision_config": {**vision, "num_hidden_layers": 10**6}},
            f"vision_config.num_hidden_layers is 1000000 but {weights} has 2 vision blocks",
        ),
        (
            {"vision_config": {**vision, "hidden_size": 10**9}},
            f"vision_config.hidden_size is 1000000000 but {weights} has 64 (video.visual.conv1.weight: [64, 3, 16, 16])",
        ),
        (
            {"vision_config": {**vision, "num_frames": 10**6}},
            f"vision_config.num_frames is 1000000 but {weights} has 8 (video.mit.positional_embedding: [1, 8, 64])",
        ),
        (
            {"vision_config": {**vision, "mit_num_hidden_layers": 10**6}},
            f"vision_config.mit_num_hidden_layers is 1000000 but {weights} has 1 MIT blocks",
        ),
        (
            {"text_config": {**text, "vocab_size": 10**9}},
            f"text_config.vocab_size is 1000000000 but {weights} has 49408 (text.token_embedding.weight: [49408, 64])",
        ),
        ({"text_config": {**text, "num_hidden_layers": "2"}}, "text_config.num_hidden_layers: expected an integer, got '2'"),
        (
            {"text_config": {**text, "num_attention_heads": 3}},
            "unsupported X-CLIP settings: text_config.num_attention_heads 3 (does not divide hidden_size 64)",
        ),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError) as error:
            actionclip.from_hf_xclip(tmp_path)
        assert str(error.value) == f"{tmp_path / 'config.json'}: {message}"


def test_our_xclip_checkpoint_config_is_checked_against_its_weights(tmp_path, monkeypatch):
    actionclip.save(actionclip.create_model("test-tiny", arch="xclip", num_frames=4, prompt_layers=1, seed=0), tmp_path)
    content = json.loads((tmp_path / "config.json").read_text())
    monkeypatch.setattr(checkpoints, "build_model", _never_built)
    weights = tmp_path / "model.safetensors"
    for key, value, message in (
        ("mit_layers", 10**6, f"mit_layers is 1000000 but {weights} has 1 MIT blocks"),
        ("prompt_layers", 10**6, f"prompt_layers is 1000000 but {weights} has 1 prompt generator blocks"),
        ("num_frames", 10**6, f"num_frames is 1000000 but {weights} has 4 (video.mit.positional_embedding: [1, 4, 64])"),
        ("mit_heads", 7, "mit_heads is 7, which does not divide embed_dim 64"),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**content, "config": {**content["config"], key: value}}))
        with pytest.raises(CheckpointError) as error:
            actionclip.load(tmp_path)
        assert str(error.value) == f"{tmp_path / 'config.json'}: {message}"


# --- The original VideoX layout -----------------------------------------------------------------------------------


class CfgNode(dict):
    """Pickles as yacs' CfgNode does (a dict subclass with four flags in its __dict__), under yacs' name."""

    def __init__(self, init_dict=None):
        super().__init__(init_dict or {})
        self.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {}, "__new_allowed__": False})


CfgNode.__module__ = "yacs.config"


def save_as_videox(path, state: dict, monkeypatch) -> None:
    """Write ``state`` as X-CLIP's ``utils/tools.py:epoch_saving`` does; yacs is importable only while saving."""
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([parameter], lr=8e-6, weight_decay=0.001)
    parameter.grad = torch.ones(3)
    optimizer.step()
    config = CfgNode({"DATA": CfgNode({"NUM_FRAMES": 8, "DATASET": "kinetics400"}), "MODEL": CfgNode({"ARCH": "ViT-B/32"}), "BASE": [""]})
    # timm's CosineLRScheduler.state_dict(): its __dict__ without the optimizer.
    lr_scheduler = {"param_group_field": "lr", "base_values": [8e-6], "t_initial": 30, "lr_min": 8e-8, "noise_range_t": None}
    module = types.ModuleType("yacs.config")
    module.CfgNode = CfgNode
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
        patch.setitem(sys.modules, "yacs.config", module)
        checkpoint = {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler,
            "max_accuracy": 80.4,
            "epoch": 29,
            "config": config,
        }
        torch.save(checkpoint, path)
    assert "yacs.config" not in sys.modules


def videox_state_dict(hf: XCLIPModel) -> dict[str, torch.Tensor]:
    """The state dict of VideoX's ``XCLIP`` (models/xclip.py, cct.py, mit.py, prompt.py) with the weights of ``hf``:
    CLIP names for the towers (nn.MultiheadAttention, ``x @ proj`` matrices), ``visual.transformer.resblocks.*.message_*``,
    ``mit.positional_embedding``/``mit.resblocks``, ``prompts_visual_ln``/``_proj``, ``prompts_generator.norm``."""
    renames = [
        (r"^text_model\.embeddings\.token_embedding\.", "token_embedding."),
        (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
        (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
        (r"^text_model\.final_layer_norm\.", "ln_final."),
        (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
        (r"^vision_model\.embeddings\.patch_embedding\.", "visual.conv1."),
        (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
        (r"^vision_model\.pre_layernorm\.", "visual.ln_pre."),
        (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
        (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
        (r"^mit\.position_embedding$", "mit.positional_embedding"),
        (r"^mit\.encoder\.layers\.", "mit.resblocks."),
        (r"^prompts_visual_layernorm\.", "prompts_visual_ln."),
        (r"^prompts_visual_projection$", "prompts_visual_proj"),
        (r"^prompts_generator\.layernorm\.", "prompts_generator.norm."),
        (r"\.self_attn\.", ".attn."),
        (r"\.layer_norm1\.", ".ln_1."),
        (r"\.layer_norm2\.", ".ln_2."),
        (r"\.mlp\.fc1\.", ".mlp.c_fc."),
        (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    ]
    state = {}
    for key, value in hf.state_dict().items():
        if key in ("text_projection.weight", "visual_projection.weight"):
            state["text_projection" if key.startswith("text") else "visual.proj"] = value.t()
            continue
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        state[key] = value
    for key in [k for k in state if re.search(r"(\.attn|\.message_attn)\.q_proj\.", k)]:
        for kind in ("weight", "bias"):
            if key.endswith(kind):
                prefix = key[: -len(f"q_proj.{kind}")]
                state[f"{prefix}in_proj_{kind}"] = torch.cat([state.pop(f"{prefix}{p}_proj.{kind}") for p in "qkv"])
    return state


@pytest.fixture(scope="module")
def hf_one_head():
    return tiny_hf_xclip(heads=1, seed=1)  # VideoX always uses width // 64 heads


def test_videox_checkpoint_loads_without_unsafe_unpickling(hf_one_head, tmp_path, monkeypatch):
    state = videox_state_dict(hf_one_head)
    assert {"visual.transformer.resblocks.1.message_attn.in_proj_weight", "mit.resblocks.0.attn.in_proj_bias", "prompts_visual_proj",
            "prompts_generator.decoder.0.mlp.3.weight", "prompts_generator.norm.weight", "text_projection"} <= state.keys()  # fmt: skip
    save_as_videox(tmp_path / "best.pth", state, monkeypatch)
    checkpoint = actionclip.read_videox_checkpoint(tmp_path / "best.pth")
    assert checkpoint["config"] == {"DATA": {"NUM_FRAMES": 8, "DATASET": "kinetics400"}, "MODEL": {"ARCH": "ViT-B/32"}, "BASE": [""]}
    assert type(checkpoint["config"]["DATA"]) is dict and checkpoint["epoch"] == 29
    assert torch.equal(checkpoint["optimizer"]["state"][0]["exp_avg"], torch.full((3,), 0.1))

    model = actionclip.from_videox_checkpoint(tmp_path / "best.pth")
    assert (model.config.num_frames, model.config.mit_layers, model.config.prompt_layers) == (8, 1, 1)
    assert_matches_transformers(model, hf_one_head, random_video(batch=2, frames=8, seed=3))

    torch.save(state, tmp_path / "bare.pth")  # a state dict alone loads too
    bare = actionclip.from_videox_checkpoint(tmp_path / "bare.pth")
    assert all(torch.equal(a, b) for a, b in zip(bare.state_dict().values(), model.state_dict().values()))


CALLS = []


def record_call(value):
    CALLS.append(value)


class Payload:
    def __reduce__(self):
        return record_call, ("executed",)


def test_videox_loader_refuses_other_pickled_objects(tmp_path):
    torch.save({"model": {"mit.positional_embedding": torch.zeros(1, 8, 64)}, "config": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(
        CheckpointError, match=r"evil\.pth: refused by the weights-only unpickler: Unsupported global: GLOBAL test_xclip\.record_call"
    ):
        actionclip.from_videox_checkpoint(tmp_path / "evil.pth")
    assert CALLS == []
    torch.save({"model": {"visual.proj": torch.zeros(2, 2)}}, tmp_path / "clip.pth")  # a CLIP, not an X-CLIP
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "clip.pth").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: not a readable X-CLIP checkpoint"):
        actionclip.from_videox_checkpoint(tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match=r"clip\.pth: not an X-CLIP checkpoint \(no 'mit.positional_embedding'"):
        actionclip.from_videox_checkpoint(tmp_path / "clip.pth")


def test_xclip_similarities_stay_fp32_under_bf16_autocast(monkeypatch):
    model = actionclip.create_model("test-tiny", arch="xclip", num_frames=3, seed=0).eval()
    # Without the prompt generator the logits are the similarities alone, so autocast must leave them unchanged.
    monkeypatch.setattr(model.prompts_generator, "forward", lambda text, visual: torch.zeros_like(text))
    with torch.no_grad():
        video_features, visual_tokens = model.video(random_video(batch=2, frames=3))
        text_features = model.encode_text(model.tokenize(LABELS))
        expected = model._logits(video_features, visual_tokens, text_features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model._logits(video_features, visual_tokens, text_features)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
