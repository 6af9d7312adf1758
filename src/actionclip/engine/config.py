"""Experiment configs: pydantic models, read from YAML, overridable with ``--set section.key=value``.

Unknown keys are errors (with the file and the key), so a typo never silently falls back to a default. The models
give editors a JSON schema too: ``python -m actionclip.engine.config --schema > configs/schema.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actionclip.data.build import DataConfig, parse_views
from actionclip.engine.optim import OptimConfig
from actionclip.host.validation import EMPTY_IS_DEFAULT, Flag, Integer, Number, error_line


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    name: str | None = "ViT-B-32"
    pretrained: str | None = "openai"
    arch: str = "actionclip"  # actionclip | unimodal | xclip
    visual_prompt: str = "Transf"
    num_frames: Integer = Field(8, ge=1)
    quick_gelu: Flag | None = None
    init_vision: str = "pretrained"
    init_text: str = "pretrained"
    freeze_vision: Flag = False
    freeze_text: Flag = False
    temporal_layers: Integer = 6
    checkpoint: str | None = None  # start from our checkpoint dir or an official .pt instead of CLIP weights


class PromptConfig(_Section):
    templates: str | list[str] = "actionclip"  # actionclip | label_only | a file | a list
    ensemble: str = "softmax"  # how test scores combine templates: softmax | embedding


class TrainConfig(_Section):
    output: str = "runs/actionclip"
    seed: Integer = 1024
    device: str | None = None  # None: cuda if available
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast with fp32 master weights)
    eval_every: Integer = 1  # epochs
    save_every_steps: Integer = 0  # 0: only at the end of each epoch
    keep_last: Integer = 2
    log_every: Integer = 10
    # The training objective (engine/objectives.py): kl | ce | head; None: the model's own (kl for ActionCLIP, ce for
    # X-CLIP, head for the unimodal classifier).
    objective: str | None = None
    # kl: contrast against every rank's batch instead of the local one, as the official single-process run over the
    # whole global batch did. None: gather when there are several processes; false keeps each rank's batch alone.
    gather_features: Flag | None = None
    # Cross-entropy losses only (unimodal, X-CLIP): label smoothing, and mixup/cutmix of whole clips (one
    # mixing coefficient and one cutmix box per batch, the same box in every frame), as X-CLIP's recipe.
    label_smoothing: Number = 0.0
    mixup_alpha: Number = 0.0
    cutmix_alpha: Number = 0.0
    mixup_switch_prob: Number = 0.5  # with both on: probability of cutmix instead of mixup
    grad_checkpointing: Flag = False
    max_steps: Integer | None = None  # stop early (for smoke tests and debugging)
    # Deterministic GPU kernels (torch.use_deterministic_algorithms, cuBLAS's fixed workspace), so a resumed run
    # repeats an uninterrupted one exactly on CUDA too; some kernels get slower. The CPU is deterministic already.
    deterministic: Flag = False


class ClassSubsets(_Section):
    size: Integer
    count: Integer
    seed: Integer = 0


class EvalConfig(_Section):
    views: str = "1x1"  # clips x crops
    batch_size: Integer = Field(16, ge=1)
    precision: str = "fp32"  # weights' precision for `actionclip eval`: fp32 | bf16 | fp16 | auto
    # Zero-shot protocols, reported per part and as mean +- std: the official splits of UCF-101/HMDB-51 ...
    splits: list[Integer] | None = None
    # ... or disjoint random class subsets (K400 -> K600 new classes: size 160, count 3).
    class_subsets: ClassSubsets | None = None


class Config(_Section):
    """An experiment: what ``configs/*.yaml`` hold."""

    model: Annotated[ModelConfig, EMPTY_IS_DEFAULT] = Field(default_factory=ModelConfig)
    prompts: Annotated[PromptConfig, EMPTY_IS_DEFAULT] = Field(default_factory=PromptConfig)
    data: Annotated[DataConfig, EMPTY_IS_DEFAULT] = Field(default_factory=DataConfig)
    optim: Annotated[OptimConfig, EMPTY_IS_DEFAULT] = Field(default_factory=OptimConfig)
    train: Annotated[TrainConfig, EMPTY_IS_DEFAULT] = Field(default_factory=TrainConfig)
    eval: Annotated[EvalConfig, EMPTY_IS_DEFAULT] = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        """Values that are each well typed but do not make sense together, and views, whose form no type says."""
        optim = self.optim
        if not 0 <= optim.warmup_epochs < optim.epochs:
            raise ValueError(
                f"optim.warmup_epochs ({optim.warmup_epochs}) must be >= 0 and less than optim.epochs "
                f"({optim.epochs}), or the learning rate never decays"
            )
        try:
            parse_views(self.eval.views)
        except ValueError as error:
            raise ValueError(f"eval.{error}") from None
        return self


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (None: all defaults) and apply ``section.key=value`` overrides."""
    values: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: invalid YAML: {error}") from error
    for override in overrides or []:
        keys, value = _parse_override(override)
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {override!r}: {key} is not a section")
        node[keys[-1]] = value
    try:
        return Config.model_validate(values)
    except ValidationError as error:
        raise ValueError(error_line(error, where, Config)) from None


def plain_dict(config: Config) -> dict[str, Any]:
    """The config as YAML writes it (tuples as lists)."""
    return config.model_dump(mode="json")


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(plain_dict(config), sort_keys=False))


def schema_json() -> str:
    """The JSON schema of experiment configs, as ``configs/schema.json`` holds it for editors."""
    return json.dumps(Config.model_json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m actionclip.engine.config --schema > configs/schema.json")
    sys.stdout.write(schema_json())
