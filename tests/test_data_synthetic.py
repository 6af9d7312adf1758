import os
from pathlib import Path

import numpy as np
import pytest
import torch

from actionclip.data import VideoDataset, count_frames, make_synthetic_dataset, parse_video_list, read_class_names, read_frames
from actionclip.data.build import DataConfig, DataOptions, dataset_samples
from actionclip.data.synthetic import OPTIONS_FILE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), clips_per_class=2, size=32, num_frames=8, seed=0)


def test_writes_videos_list_and_classes(dataset):
    assert len(dataset.classes) == 3 * 3 * 6 and len(dataset.samples) == 108
    assert dataset.classes[:6] == [
        "red circle moving left",
        "red circle moving right",
        "red circle moving up",
        "red circle moving down",
        "red circle growing",
        "red circle shrinking",
    ]
    assert read_class_names(dataset.classes_file) == dataset.classes
    listed = parse_video_list(dataset.list_file, root=dataset.root)
    assert [(s.path, s.label) for s in listed] == [(s.path, s.label) for s in dataset.samples]
    assert count_frames(dataset.samples[0].path) == 8
    assert read_frames(dataset.samples[0].path, [0]).shape == (1, 32, 32, 3)


def test_deterministic_under_seed(dataset, tmp_path):
    again = make_synthetic_dataset(tmp_path / "a", colours=("red",), shapes=("circle",), seed=0)
    other = make_synthetic_dataset(tmp_path / "b", colours=("red",), shapes=("circle",), seed=1)
    for s, t, u in zip(dataset.samples, again.samples, other.samples):
        frames = read_frames(s.path, range(8))
        np.testing.assert_array_equal(frames, read_frames(t.path, range(8)))
        assert not np.array_equal(frames, read_frames(u.path, range(8)))


def test_shape_colour_and_motion_are_drawn(dataset):
    by_class = {dataset.classes[s.label]: s.path for s in dataset.samples}
    right = read_frames(by_class["blue square moving right"], range(8)).astype(int)
    blue = (right[..., 2] > 150) & (right[..., 0] < 100)
    xs = [np.nonzero(blue[t])[1].mean() for t in range(8)]
    assert all(b > a for a, b in zip(xs, xs[1:]))  # moves right
    down = read_frames(by_class["green triangle moving down"], range(8)).astype(int)
    green = (down[..., 1] > 150) & (down[..., 0] < 100)
    ys = [np.nonzero(green[t])[0].mean() for t in range(8)]
    assert all(b > a for a, b in zip(ys, ys[1:]))
    grow = read_frames(by_class["red circle growing"], range(8)).astype(int)
    area = [((g[..., 0] > 150) & (g[..., 1] < 100)).sum() for g in grow]
    assert all(b > a for a, b in zip(area, area[1:]))


@pytest.mark.parametrize("pair", [("moving left", "moving right"), ("moving up", "moving down"), ("growing", "shrinking")])
def test_opposite_motions_have_the_same_frames_in_reverse(dataset, pair):
    by_class = {}
    for s in dataset.samples:
        by_class.setdefault(dataset.classes[s.label], []).append(s.path)
    for a, b in zip(by_class[f"red circle {pair[0]}"], by_class[f"red circle {pair[1]}"]):
        fa, fb = read_frames(a, range(8)), read_frames(b, range(8))
        np.testing.assert_array_equal(fa, fb[::-1])  # decoded pixels, not just the drawings
        assert not np.array_equal(fa, fb)


def test_mean_pooling_cannot_separate_opposite_motions(dataset):
    ds = VideoDataset(dataset.samples, dataset.classes, num_frames=8, mode="test", transform=lambda x, rng: x.permute(0, 3, 1, 2).float())
    left = ds[0][0]  # red circle moving left, clip 0
    right = ds[2][0]  # red circle moving right, clip 0
    assert ds.samples[0].label == 0 and ds.samples[2].label == 1
    assert torch.equal(left.mean(0), right.mean(0)) and not torch.equal(left, right)


def test_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="even"):
        make_synthetic_dataset(tmp_path, size=33)
    with pytest.raises(ValueError, match="unknown motion"):
        make_synthetic_dataset(tmp_path, motions=("spin",))
    with pytest.raises(ValueError, match="unknown colour"):
        make_synthetic_dataset(tmp_path, colours=("mauve",))


def _synthetic_config(root, **options):
    settings = {"shapes": ["circle"], "colours": ["red"], "motions": ["left"], "clips_per_class": 1, "size": 16, "num_frames": 2, **options}
    return DataConfig(format="synthetic", root=str(root), options=DataOptions(**settings))


@pytest.mark.parametrize(
    "option, value, follows",
    [
        ("colours", ["blue"], lambda samples, classes: classes == ["blue circle moving left"]),
        ("size", 32, lambda samples, classes: read_frames(samples[0].path, [0]).shape == (1, 32, 32, 3)),
        ("num_frames", 4, lambda samples, classes: count_frames(samples[0].path) == 4),
        ("clips_per_class", 2, lambda samples, classes: len(samples) == 2),
    ],
)
def test_generated_data_follows_changed_options_and_keeps_the_old(tmp_path, option, value, follows):
    first, first_classes = dataset_samples(_synthetic_config(tmp_path), "train")
    written = os.stat(first[0].path).st_mtime_ns
    changed = dataset_samples(_synthetic_config(tmp_path, **{option: value}), "train")
    assert follows(*changed)
    again = dataset_samples(_synthetic_config(tmp_path), "train")
    assert again == (first, first_classes) and os.stat(first[0].path).st_mtime_ns == written  # reused, not rewritten


def test_another_seed_gives_other_videos(tmp_path):
    first, _ = dataset_samples(_synthetic_config(tmp_path), "train")
    other, _ = dataset_samples(_synthetic_config(tmp_path, seed=5), "train")
    assert not np.array_equal(read_frames(first[0].path, [0]), read_frames(other[0].path, [0]))


def test_an_interrupted_generation_is_done_again(tmp_path):
    samples, _ = dataset_samples(_synthetic_config(tmp_path), "train")
    folder = Path(samples[0].path).parents[1]
    (folder / OPTIONS_FILE).unlink()  # as if killed before the generation finished
    Path(samples[0].path).write_bytes(b"")
    again, _ = dataset_samples(_synthetic_config(tmp_path), "train")
    assert count_frames(again[0].path) == 2 and (folder / OPTIONS_FILE).is_file()
