import json
import os
from pathlib import Path

import pytest

from actionclip.cli.main import main
from actionclip.data.build import parse_views
from actionclip.engine.config import load_config, save_config, schema_json


def test_yaml_overrides_and_number_coercion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  visual_prompt: MeanP\noptim:\n  lr: 5e-6\n  betas: [0.9, 0.98]\n")
    config = load_config(path, ["optim.lr=1e-5", "data.batch_size=4", "data.options={shots: 2}"])
    assert config.model.visual_prompt == "MeanP"
    assert config.optim.lr == 1e-5 and isinstance(config.optim.lr, float)  # YAML reads "1e-5" as a string
    assert config.optim.betas == (0.9, 0.98)
    assert config.data.batch_size == 4 and config.data.options.shots == 2
    assert config.optim.weight_decay == 0.2 and config.train.seed == 1024  # defaults of the paper/official code
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_unknown_keys_and_bad_values_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: optim: unknown key\(s\) learning_rate"):
        load_config(path)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: optim\.lr: expected a number, got 'fast'"):
        load_config(path)
    with pytest.raises(ValueError, match="must look like section.key=value"):
        load_config(None, ["optim.lr"])


def test_parse_views():
    assert parse_views("10x3") == (10, 3) and parse_views("1x1") == (1, 1)
    with pytest.raises(ValueError, match="CLIPSxCROPS"):
        parse_views("ten")
    with pytest.raises(ValueError, match="crops 1 or 3"):
        parse_views("4x2")


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  options:\n    shot: 4\n", r"exp\.yaml: data\.options: unknown key\(s\) shot; known: .*shots"),
        (
            "data:\n  train_transform: {grayscale: 0}\n",
            r"exp\.yaml: data\.train_transform: unknown key\(s\) grayscale; known: .*grayscale_p",
        ),
        ("eval:\n  class_subsets: {size: 160, cout: 3}\n", r"exp\.yaml: eval\.class_subsets: unknown key\(s\) cout"),
        ("eval:\n  class_subsets: {size: 160}\n", r"exp\.yaml: eval\.class_subsets: missing key\(s\) count"),
    ],
)
def test_a_misspelt_key_in_any_section_names_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_typed_sections_read_their_values(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "data:\n  options: {shots: 4, split_dir: splits}\n  train_transform: {grayscale_p: 0}\n"
        "eval:\n  class_subsets: {size: 160, count: 3}\ntrain:\n  objective: ce\n"
    )
    config = load_config(path)
    assert (config.data.options.shots, config.data.options.split_dir) == (4, "splits")
    assert config.data.train_transform == {"grayscale_p": 0}
    assert (config.eval.class_subsets.size, config.eval.class_subsets.count, config.eval.class_subsets.seed) == (160, 3, 0)
    assert config.train.objective == "ce" and load_config(None).eval.class_subsets is None


def test_train_and_eval_report_a_config_mistake_in_one_line(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  options:\n    shot: 4\n")
    for command in (["train", str(path)], ["eval", str(path)]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {path}: data.options: unknown key(s) shot") and error.count("\n") == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=[1, 2]", r"config: optim\.lr: expected a number, got \[1, 2\]"),
        ("optim.betas=0.9", r"config: optim\.betas: expected two numbers"),
        ("data.batch_size=2.5", r"config: data\.batch_size: expected an integer, got 2\.5"),
        ("data.batch_size=0", r"config: data\.batch_size: must be >= 1, got 0"),
        ("model.num_frames=0", r"config: model\.num_frames: must be >= 1"),
        ("eval.splits=abc", r"config: eval\.splits: expected a list of integers or null, got 'abc'"),
        ("eval.splits=[1, x]", r"config: eval\.splits\[1\]: expected an integer, got 'x'"),
        ("prompts.templates={a: 1}", r"config: prompts\.templates: expected a string or a list of strings"),
        ("train.gather_features=maybe", r"config: train\.gather_features: expected true or false or null, got 'maybe'"),
        ("optim.warmup_epochs=60", r"optim\.warmup_epochs \(60\.0\) must be >= 0 and less than optim\.epochs \(50\)"),
        ("eval.views=garbage", r"config: eval\.views must look like CLIPSxCROPS"),
    ],
)
def test_a_value_of_the_wrong_type_or_out_of_range_is_refused_by_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_eval_views_from_the_command_line_are_checked_like_the_config(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data:\n  format: synthetic\n  root: {tmp_path}\n")
    assert main(["eval", str(path), "--views", "garbage"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "eval.views must look like CLIPSxCROPS" in error and error.count("\n") == 1


@pytest.mark.parametrize(
    "device, message",
    [
        ("tpu", "train.device tpu: not a device name (cpu, cuda, cuda:1, mps, ...)"),
        ("cuda:0", "train.device cuda:0: CUDA is not available here"),
    ],
)
def test_a_device_that_is_not_one_or_not_here_is_one_line(tmp_path, capsys, device, message):
    if device.startswith("cuda") and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "exp.yaml"
    path.write_text(f"train:\n  device: '{device}'\n")
    for command in (["train", str(path)], ["eval", str(path)]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error == f"error: {message}\n"


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REGENERATE = "python -m actionclip.engine.config --schema > configs/schema.json"


def test_the_committed_schema_is_the_generated_one_and_every_config_names_it_and_validates():
    generated = schema_json()  # what `python -m actionclip.engine.config --schema` writes
    assert (CONFIGS / "schema.json").read_text() == generated, f"configs/schema.json is stale; regenerate it: {REGENERATE}"
    assert json.loads(generated)["$defs"]["OptimConfig"]["additionalProperties"] is False  # editors flag misspelt keys
    for path in sorted(CONFIGS.rglob("*.yaml")):
        schema = os.path.relpath(CONFIGS / "schema.json", path.parent)
        assert path.read_text().split("\n", 1)[0] == f"# yaml-language-server: $schema={schema}", path
        load_config(path)
