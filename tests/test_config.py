import pytest

from actionclip.config import load_config, save_config
from actionclip.data.build import parse_views


def test_yaml_overrides_and_number_coercion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  visual_prompt: MeanP\noptim:\n  lr: 5e-6\n  betas: [0.9, 0.98]\n")
    config = load_config(path, ["optim.lr=1e-5", "data.batch_size=4", "data.options={shots: 2}"])
    assert config.model.visual_prompt == "MeanP"
    assert config.optim.lr == 1e-5 and isinstance(config.optim.lr, float)  # YAML reads "1e-5" as a string
    assert config.optim.betas == (0.9, 0.98)
    assert config.data.batch_size == 4 and config.data.options == {"shots": 2}
    assert config.optim.weight_decay == 0.2 and config.train.seed == 1024  # defaults of the paper/official code
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_unknown_keys_and_bad_values_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(ValueError, match=r"typo\.yaml\.optim: unknown key\(s\) learning_rate"):
        load_config(path)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"typo\.yaml\.optim\.lr: expected a number, got 'fast'"):
        load_config(path)
    with pytest.raises(ValueError, match="must look like section.key=value"):
        load_config(None, ["optim.lr"])


def test_parse_views():
    assert parse_views("10x3") == (10, 3) and parse_views("1x1") == (1, 1)
    with pytest.raises(ValueError, match="CLIPSxCROPS"):
        parse_views("ten")
    with pytest.raises(ValueError, match="crops 1 or 3"):
        parse_views("4x2")
