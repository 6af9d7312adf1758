"""Evaluation memory: frames per forward bounded whatever the views and batch size, uint8 frames until the device,
evaluation videos scaled down while decoding."""

import torch
from torch import nn
from torch.utils.data import Dataset

from actionclip.data.build import DataConfig, build_dataset
from actionclip.data.transforms import normalize
from actionclip.engine.evaluate import predict_dataset


class _Views(Dataset):
    """``count`` uint8 videos of ``views`` views of ``frames`` frames, normalised with ImageNet's statistics."""

    normalization = "imagenet"

    def __init__(self, count: int, views: int, frames: int, size: int = 8):
        generator = torch.Generator().manual_seed(0)
        self.videos = torch.randint(0, 256, (count, views, frames, 3, size, size), dtype=torch.uint8, generator=generator)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        return self.videos[i], i % 3


class _Recorder(nn.Module):
    """Scores a clip by its mean pixel, and records the frames of every forward and the inputs it saw."""

    def __init__(self):
        super().__init__()
        self.frames_per_forward, self.inputs = [], []

    def video_probabilities(self, video, text_features, ensemble="softmax"):
        self.frames_per_forward.append(video.shape[0] * video.shape[1])
        self.inputs.append(video)
        mean = video.mean(dim=(1, 2, 3, 4))
        return torch.stack([mean, -mean, 2 * mean], dim=1).softmax(dim=1)


def test_views_go_through_the_model_in_chunks_of_bounded_frames():
    # 10x3 views of 4 frames, 5 videos a batch: 600 frames that a single forward would take at once.
    dataset = _Views(count=7, views=30, frames=4)
    chunked, whole = _Recorder(), _Recorder()
    result = predict_dataset(chunked, dataset, ["a", "b", "c"], batch_size=5, progress=False, frames_per_forward=48)
    assert max(chunked.frames_per_forward) <= 48 and sum(chunked.frames_per_forward) == 7 * 30 * 4
    reference = predict_dataset(whole, dataset, ["a", "b", "c"], batch_size=7, progress=False, frames_per_forward=10**6)
    assert whole.frames_per_forward == [7 * 30 * 4]
    torch.testing.assert_close(result.probabilities, reference.probabilities, rtol=0, atol=1e-6)
    # One clip per forward at least, even when a clip alone has more frames than the bound.
    few = _Recorder()
    predict_dataset(few, dataset, ["a", "b", "c"], batch_size=2, progress=False, frames_per_forward=3)
    assert set(few.frames_per_forward) == {4}


def test_uint8_frames_are_normalised_on_the_device_with_the_dataset_statistics():
    dataset = _Views(count=2, views=3, frames=2)
    model = _Recorder()
    predict_dataset(model, torch.utils.data.Subset(dataset, [0, 1]), ["a", "b", "c"], batch_size=2, progress=False)
    seen = torch.cat(model.inputs)
    assert seen.dtype == torch.float32
    torch.testing.assert_close(seen, normalize(dataset.videos.flatten(0, 1), "imagenet"), rtol=0, atol=1e-6)


def test_evaluation_videos_are_scaled_down_while_decoding_to_the_side_the_transform_needs(tmp_path):
    for name in ("a/1.mp4", "b/2.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    config = DataConfig(format="folder", train=str(tmp_path), val=str(tmp_path), image_size=32)
    assert build_dataset(config, "val", 4, views="10x3").decode_short_side == 32  # three crops of the short side
    assert build_dataset(config, "val", 4).decode_short_side == 32 * 256 // 224  # resize to 36, centre crop
    assert build_dataset(config, "train", 4).decode_short_side is None  # multi-scale crops of the full frame


def test_evaluation_keeps_no_autograd_graph():
    # A graph kept across chunks would hold every chunk's activations: memory would grow with the eval batch again.
    model = _Recorder()
    model.scale = nn.Parameter(torch.ones(()))
    model.video_probabilities = lambda video, text_features, ensemble="softmax": torch.stack(
        [video.mean(dim=(1, 2, 3, 4)) * model.scale] * 3, dim=1
    ).softmax(dim=1)
    result = predict_dataset(model, _Views(count=4, views=3, frames=2), ["a", "b", "c"], batch_size=2, progress=False)
    assert not result.probabilities.requires_grad
