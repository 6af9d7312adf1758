import json

import numpy as np
import pytest
import torch
from PIL import Image

import actionclip
from actionclip.cli.main import main
from actionclip.engine.pretrain import ImageCaptionPairs, PretrainConfig, caption_groups, check_captions_fit, pretrain_from_files
from conftest import TINY


def _write_pairs(folder, count=8):
    """Half red squares on the left, half blue squares on the right: two captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = np.full((32, 32, 3), 30, dtype=np.uint8)
        left = i % 2 == 0
        image[10:20, 2:12] = (220, 40, 40) if left else (50, 90, 235)
        if not left:
            image[10:20] = image[10:20, ::-1]
        caption = "red square on the left" if left else "blue square on the right"
        Image.fromarray(image).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
        rows.append(f"{i}.png,{caption}")
    (folder / "pairs.csv").write_text("path,caption\n" + "\n".join(rows) + "\n")
    return folder


def test_identical_captions_share_a_group():
    tokens = torch.tensor([[1, 5, 2], [1, 6, 2], [1, 5, 2], [1, 7, 2]])
    groups = caption_groups(tokens)
    assert groups[0] == groups[2]
    assert len({groups[0].item(), groups[1].item(), groups[3].item()}) == 3


def test_truncated_captions_are_refused():
    assert check_captions_fit(["red circle"], 8) == 4  # start, red, circle, end
    with pytest.raises(ValueError, match="context length is 4"):
        check_captions_fit(["a red circle moving left"], 4)


def test_csv_and_folder_give_the_same_pairs(tmp_path):
    folder = _write_pairs(tmp_path / "pairs")
    from_csv, from_folder = ImageCaptionPairs(folder / "pairs.csv", 32), ImageCaptionPairs(folder, 32)
    assert [c for _, c in from_csv.pairs] == [c for _, c in from_folder.pairs]
    image, caption = from_csv[1]
    assert image.shape == (3, 32, 32) and caption == "blue square on the right"
    assert torch.equal(image, from_folder[1][0])
    (folder / "0.txt").unlink()
    with pytest.raises(FileNotFoundError, match="0.png"):
        ImageCaptionPairs(folder, 32)


def test_pretrain_from_files_learns_and_saves_a_loadable_open_clip_state_dict(tmp_path):
    data = _write_pairs(tmp_path / "pairs")
    # 2e-3 collapses this 1-layer, 4-patch model onto one embedding within a few steps (loss stuck at ln 2).
    config = PretrainConfig(steps=30, batch_size=8, lr=5e-4, warmup=0.1, log_every=100)
    path = pretrain_from_files(data / "pairs.csv", "test-tiny", tmp_path / "out", config, log=None)
    log = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert np.mean(log["losses"][-5:]) < 0.5 * np.mean(log["losses"][:5])
    saved = torch.load(path, weights_only=True)
    assert "visual.conv1.weight" in saved and "token_embedding.weight" in saved  # open_clip layout

    model = actionclip.create_model("test-tiny", pretrained=str(path), num_frames=2)
    assert torch.equal(model.text.token_embedding.weight, saved["token_embedding.weight"])
    assert torch.equal(model.video.visual.conv1.weight, saved["visual.conv1.weight"])
    # The trained CLIP tells the two kinds of image apart by their captions.
    images = torch.stack([ImageCaptionPairs(data, 32)[i][0] for i in range(4)])
    video = images[:, None].expand(-1, 2, -1, -1, -1)
    probabilities = model.classify(video, ["red square on the left", "blue square on the right"], templates="label_only")
    assert probabilities.argmax(dim=1).tolist() == [0, 1, 0, 1]
    # The architecture is also inferred from the file alone (OpenAI layout, QuickGELU).
    inferred = actionclip.create_model(None, pretrained=str(path), num_frames=2)
    assert inferred.config.clip["embed_dim"] == TINY["embed_dim"]


def test_cli_pretrain_with_a_custom_config(tmp_path, capsys):
    data = _write_pairs(tmp_path / "pairs")
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    assert (
        main(
            [
                "pretrain",
                str(data),
                "--model",
                "my-tiny",
                "--model-config",
                str(config_file),
                "--output",
                str(tmp_path / "out"),
                "--steps",
                "2",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("clip.pt")
    assert json.loads((tmp_path / "out" / "model_config.json").read_text()) == TINY
    assert len(json.loads((tmp_path / "out" / "pretrain.json").read_text())["losses"]) == 2
