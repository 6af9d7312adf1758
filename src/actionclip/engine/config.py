"""Experiment configs: plain dataclasses, read from YAML, overridable with ``--set section.key=value``.

Unknown keys are errors (with the file and the key), so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from actionclip.data.build import DataConfig, parse_views
from actionclip.engine.optim import OptimConfig


@dataclass
class ModelConfig:
    name: str | None = "ViT-B-32"
    pretrained: str | None = "openai"
    arch: str = "actionclip"  # actionclip | unimodal | xclip
    visual_prompt: str = "Transf"
    num_frames: int = 8
    quick_gelu: bool | None = None
    init_vision: str = "pretrained"
    init_text: str = "pretrained"
    freeze_vision: bool = False
    freeze_text: bool = False
    temporal_layers: int = 6
    checkpoint: str | None = None  # start from our checkpoint dir or an official .pt instead of CLIP weights


@dataclass
class PromptConfig:
    templates: str | list[str] = "actionclip"  # actionclip | label_only | a file | a list
    ensemble: str = "softmax"  # how test scores combine templates: softmax | embedding


@dataclass
class TrainConfig:
    output: str = "runs/actionclip"
    seed: int = 1024
    device: str | None = None  # None: cuda if available
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast with fp32 master weights)
    eval_every: int = 1  # epochs
    save_every_steps: int = 0  # 0: only at the end of each epoch
    keep_last: int = 2
    log_every: int = 10
    # The training objective (engine/objectives.py): kl | ce | head; None: the model's own (kl for ActionCLIP, ce for
    # X-CLIP, head for the unimodal classifier).
    objective: str | None = None
    # kl: contrast against every rank's batch instead of the local one, as the official single-process run over the
    # whole global batch did. None: gather when there are several processes; false keeps each rank's batch alone.
    gather_features: bool | None = None
    # Cross-entropy losses only (unimodal, X-CLIP): label smoothing, and mixup/cutmix of whole clips (one
    # mixing coefficient and one cutmix box per batch, the same box in every frame), as X-CLIP's recipe.
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_switch_prob: float = 0.5  # with both on: probability of cutmix instead of mixup
    grad_checkpointing: bool = False
    max_steps: int | None = None  # stop early (for smoke tests and debugging)
    # Deterministic GPU kernels (torch.use_deterministic_algorithms, cuBLAS's fixed workspace), so a resumed run
    # repeats an uninterrupted one exactly on CUDA too; some kernels get slower. The CPU is deterministic already.
    deterministic: bool = False


@dataclass
class ClassSubsets:
    size: int
    count: int
    seed: int = 0


@dataclass
class EvalConfig:
    views: str = "1x1"  # clips x crops
    batch_size: int = 16
    precision: str = "fp32"  # weights' precision for `actionclip eval`: fp32 | bf16 | fp16 | auto
    # Zero-shot protocols, reported per part and as mean +- std: the official splits of UCF-101/HMDB-51 ...
    splits: list[int] | None = None
    # ... or disjoint random class subsets (K400 -> K600 new classes: size 160, count 3).
    class_subsets: ClassSubsets | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _section(hint) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), if any."""
    return next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)


def _check_keys(values: dict, known, where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(values, fields, where)
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in values]
    if required:
        raise ValueError(f"{where}: missing key(s) {', '.join(required)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint, here = hints[name], f"{where}.{name}"
        section = _section(hint)
        if section is not None:
            optional = section is not hint
            kwargs[name] = None if optional and value is None else _build(section, value or {}, here)
        elif name == "betas":
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise ValueError(f"{here}: expected two numbers, got {value!r}")
            kwargs[name] = tuple(_coerce(v, float, here) for v in value)
        else:
            if "keys" in fields[name].metadata:  # a mapping whose keys are known (TrainTransform settings)
                if not isinstance(value, dict):
                    raise ValueError(f"{here}: expected a mapping, got {type(value).__name__}")
                _check_keys(value, fields[name].metadata["keys"], here)
            kwargs[name] = _coerce(value, hint, here)
    return cls(**kwargs)


def _coerce(value: Any, hint, where: str) -> Any:
    """``value`` as the declared type, or a ValueError naming the key. YAML reads ``5e-6`` (no dot) as a string,
    so strings become the declared number type; every other mismatch (``lr: [1, 2]``) is refused here rather than
    failing deep in the optimizer."""
    if hint is Any:
        return value
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option)
        if origin is list and isinstance(value, list):
            return [_coerce(item, typing.get_args(option)[0], f"{where}[{i}]") for i, item in enumerate(value)]
        if origin is dict and isinstance(value, dict):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if option in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if option is float or float(value).is_integer():
                return option(value)
    if isinstance(value, str):
        for number in (int, float):
            if number in options:
                try:
                    return number(value)
                except ValueError:
                    continue
    raise ValueError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join(names.get(option, f"a list of {_describe(typing.get_args(option)[0])}" if typing.get_origin(option) is list
                                 else str(option)) for option in options)


def _check_values(config: Config, where: str) -> None:
    """Values that are each well typed but do not make sense together."""
    optim = config.optim
    if not 0 <= optim.warmup_epochs < optim.epochs:
        raise ValueError(f"{where}: optim.warmup_epochs ({optim.warmup_epochs}) must be >= 0 and less than optim.epochs "
                         f"({optim.epochs}), or the learning rate never decays")
    positive = {"model.num_frames": config.model.num_frames, "data.batch_size": config.data.batch_size,
                "data.image_size": config.data.image_size, "eval.batch_size": config.eval.batch_size,
                "optim.accumulation_steps": optim.accumulation_steps, "optim.epochs": optim.epochs}
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{where}: {key} must be >= 1, got {value}")
    if config.data.workers < 0:
        raise ValueError(f"{where}: data.workers must be >= 0, got {config.data.workers}")
    try:
        parse_views(config.eval.views)
    except ValueError as error:
        raise ValueError(f"{where}: eval.{error}") from None


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
    config = _build(Config, values, where)
    _check_values(config, where)
    return config


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plain_dict(config: Config) -> dict[str, Any]:
    """The config as YAML writes it (tuples as lists)."""
    return _plain(config.to_dict())


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(plain_dict(config), sort_keys=False))
