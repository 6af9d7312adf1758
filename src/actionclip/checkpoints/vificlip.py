"""Import of ViFi-CLIP checkpoints (muzairkhattak/ViFi-CLIP; TC-CLIP and OST start from the same code).

A ViFi-CLIP file is what its ``utils/tools.py:epoch_saving`` writes, the layout of X-CLIP's (whose code ViFi-CLIP
started from): ``{"model", "optimizer", "lr_scheduler", "max_accuracy", "epoch", "config"}`` with a yacs ``config``,
read here through the same allow-list as X-CLIP's files. The model is plain CLIP: ``module.image_encoder.*`` (CLIP's
``visual``), ``module.text_encoder.*`` (CLIP's text transformer, positions, ``ln_final``, ``text_projection``) and
``module.logit_scale``. There is no token embedding: ViFi-CLIP embeds its prompts with the frozen embedding of the CLIP
it was fine-tuned from, which ``base`` supplies. At test time (``main.py:validate``) a video is the mean of its
frames' un-normalised features, classes are "a photo of a {}.", frames are normalised with ImageNet's mean and std, and
a view's scores are ``softmax(logit_scale.exp() * cos)``: the imported model keeps all of that in its config.
"""

from __future__ import annotations

from pathlib import Path

import torch

from actionclip.checkpoints.xclip import read_videox_checkpoint
from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig
from actionclip.models.backbone import create_clip
from actionclip.models.text import make_tokenizer
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import infer_openai_config, load_strict, read_checkpoint, unwrap_state_dict

# The prompt learner of ViFi-CLIP's second stage ("bridge and prompt") learns context vectors that CLIP has not.
_PROMPTING_KEYS = ("prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix")
# fp16 rounding: ViFi-CLIP stores its prompt embeddings after casting them to the fp16 CLIP's dtype.
_EMBEDDING_TOLERANCE = 1e-3


def _setting(config: dict, *path: str, default=None):
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    return default if config is None else config


def base_token_embedding(base: str | Path, arch: str | None, source: str | Path) -> torch.Tensor:
    """``token_embedding.weight`` of ``base``: a local CLIP weight file (OpenAI's ``.pt`` or a state dict), or an
    open_clip pretrained tag (e.g. ``openai``) of the architecture the file's config names (``MODEL.ARCH``)."""
    if Path(base).is_file():
        state = unwrap_state_dict(read_checkpoint(base), base)
    else:
        if not arch:
            raise CheckpointError(f"{source}: its config names no MODEL.ARCH; give base as a local CLIP file")
        clip, _ = create_clip(arch.replace("/", "-"), str(base))
        state = clip.state_dict()
    if "token_embedding.weight" not in state:
        raise CheckpointError(f"{base}: no token_embedding.weight (not an OpenAI-layout CLIP)")
    return state["token_embedding.weight"].float()


def _check_base(prompts: torch.Tensor, embedding: torch.Tensor, ctx_init: str, clip_config: dict, path, base) -> None:
    """The file's stored prompt embeddings begin with the start token and ``ctx_init``'s tokens, embedded by the CLIP
    it was tuned from: compare them with ``base``'s, so that a wrong base is named rather than silently used."""
    tokens = make_tokenizer(clip_config)([ctx_init])[0]
    count = int((tokens != 0).sum()) - 1  # the start token and the context, without the end token
    expected = embedding[tokens[:count]]
    difference = (prompts[0, :count].float() - expected).abs().max().item()
    if difference > _EMBEDDING_TOLERANCE:
        raise CheckpointError(
            f"{path}: base {str(base)!r} is not the CLIP this file was fine-tuned from: its embedding of "
            f"{ctx_init!r} differs from the file's by {difference:.2g}"
        )


def from_vificlip_checkpoint(path: str | Path, base: str | Path = "openai") -> ActionCLIP:
    """Our model from a ViFi-CLIP ``.pth``, in eval mode, fp32, with ViFi-CLIP's test-time settings in its config.

    ``base``: the CLIP the file was fine-tuned from, for its token embedding: an open_clip tag of the file's
    architecture (``openai`` for every published ViFi-CLIP file) or a local CLIP file. The CLIP size is read off the
    state dict's shapes (heads = width // 64, as OpenAI's ``build_model``)."""
    checkpoint = read_videox_checkpoint(path)
    model_state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: not a ViFi-CLIP checkpoint (no 'model' state dict)")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in model_state.items()}
    if "image_encoder.proj" not in state or "text_encoder.ln_final.weight" not in state:
        raise CheckpointError(f"{path}: not a ViFi-CLIP checkpoint (no image_encoder.proj / text_encoder.ln_final.weight)")
    if any(key in state for key in _PROMPTING_KEYS):
        raise CheckpointError(
            f"{path}: a ViFi-CLIP prompting checkpoint (learned context vectors); only fine-tuned "
            "ViFi-CLIP files (PROMPT_MODEL False) are read"
        )
    prompts = state.pop("prompt_learner.complete_text_embeddings", None)
    clip_state = {}
    for key, value in state.items():
        if key.startswith("image_encoder."):
            clip_state["visual." + key[len("image_encoder.") :]] = value
        elif key.startswith("text_encoder."):
            clip_state[key[len("text_encoder.") :]] = value
        else:
            clip_state[key] = value
    config = checkpoint.get("config") or {}
    clip_state["token_embedding.weight"] = base_token_embedding(base, _setting(config, "MODEL", "ARCH"), path)
    clip_config = infer_openai_config(clip_state)
    if clip_state["token_embedding.weight"].shape[1] != clip_config["text_cfg"]["width"]:
        raise CheckpointError(
            f"{path}: base {str(base)!r} has a token embedding of width "
            f"{clip_state['token_embedding.weight'].shape[1]}, the file's text tower {clip_config['text_cfg']['width']}"
        )
    ctx_init = _setting(config, "TRAINER", "ViFi_CLIP", "CTX_INIT", default="a photo of a").replace("_", " ")
    if prompts is not None:
        _check_base(prompts, clip_state["token_embedding.weight"], ctx_init, clip_config, path, base)
    model_config = ActionCLIPConfig(
        clip=clip_config,
        visual_prompt="MeanP",
        num_frames=int(_setting(config, "DATA", "NUM_FRAMES", default=8)),
        pretrained=str(path),
        templates=[ctx_init + " {}."],
        normalization="imagenet",
        # ViFi-CLIP scores with its learned temperature where the official ActionCLIP uses 100.
        test_logit_scale=float(clip_state["logit_scale"].float().exp()),
    )
    ours = {("video." + k if k.startswith("visual.") else k if k == "logit_scale" else "text." + k): v for k, v in clip_state.items()}
    model = ActionCLIP(model_config)
    load_strict(model, ours, str(path))
    return model.eval()
