import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from actionclip.data import CLIP_MEAN, CLIP_STD, ThreeCropTransform, TrainTransform, normalize
from actionclip.data import TestTransform as EvalTransform  # a Test* name would be collected by pytest
from actionclip.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    adjust_hue,
    fixed_crop_offsets,
    frames_to_device,
    multi_scale_crop_box,
    to_tchw,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def clip(T=4, H=256, W=340, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8))


def levels(x):
    """The transforms' uint8 output as float pixel levels."""
    return x.float()


def test_normalize_uses_clip_mean_and_std():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = normalize(x)
    expected = (torch.tensor([0.0, 1.0, 128 / 255]) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], expected)


def test_fixed_offsets_are_the_official_13():
    offsets = fixed_crop_offsets(340, 256, 224, 224)
    # w_step = (340 - 224) // 4 = 29, h_step = 8
    assert offsets[:5] == [(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]
    assert offsets[5:] == [(0, 16), (116, 16), (58, 32), (58, 0), (29, 8), (87, 8), (29, 24), (87, 24)]


def test_multi_scale_crop_box_choices():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        top, left, h, w = multi_scale_crop_box(256, 340, 224, rng=rng)
        seen.add((h, w))
        assert (left, top) in fixed_crop_offsets(340, 256, w, h)
    # Short side 256 * (1, .875, .75, .66) = 256, 224, 192, 168; pairs at most one scale step apart.
    ids = {side: i for i, side in enumerate([256, 224, 192, 168])}
    assert all(abs(ids[h] - ids[w]) <= 1 for h, w in seen)
    assert len(seen) == 10 and {h for h, _ in seen} == set(ids)


def test_train_transform_shape_range_and_determinism():
    x = clip()
    tf = TrainTransform()
    out = tf(x, np.random.default_rng(3))
    assert out.shape == (4, 3, 224, 224) and out.dtype == torch.uint8
    assert torch.equal(out, tf(x, np.random.default_rng(3)))
    assert not torch.equal(out, tf(x, np.random.default_rng(4)))
    pixels = levels(out)
    assert pixels.min() > -0.5 and pixels.max() < 255.5


def test_train_transform_is_the_same_for_every_frame_of_a_clip():
    # Identical frames in, identical frames out: crop, flip, jitter and grayscale are drawn per clip.
    frame = clip(T=1)
    x = frame.expand(6, -1, -1, -1).contiguous()
    for seed in range(10):
        out = TrainTransform(randaugment=(2, 9))(x, seed)
        assert all(torch.equal(out[0], out[t]) for t in range(1, 6))


def test_train_flip_and_grayscale_probabilities():
    x = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    x[:, :, :32, 0] = 255  # red left half
    tf = TrainTransform(size=64, scales=(1.0,), jitter_p=0.0, grayscale_p=0.0)
    flips = sum(levels(tf(x, s))[0, 0, 32, 5] < 128 for s in range(400))
    assert 160 < flips < 240
    gray = TrainTransform(size=64, scales=(1.0,), jitter_p=0.0, grayscale_p=0.2, flip=False)
    grays = sum(bool(torch.allclose(*levels(gray(x, s))[0, :2, 32, 5].split(1), atol=1)) for s in range(400))
    assert 50 < grays < 110
    no_flip = TrainTransform(size=64, scales=(1.0,), jitter_p=0.0, grayscale_p=0.0, flip=False)
    assert all(levels(no_flip(x, s))[0, 0, 32, 5] > 250 for s in range(20))


def test_colour_jitter_changes_colours_per_clip():
    x = torch.full((2, 32, 32, 3), 100, dtype=torch.uint8)
    tf = TrainTransform(size=32, scales=(1.0,), jitter_p=1.0, grayscale_p=0.0, flip=False)
    means = {round(float(levels(tf(x, s)).mean()), 1) for s in range(20)}
    assert len(means) > 10


def test_test_transform_resize_and_centre_crop():
    x = torch.zeros(2, 240, 480, 3, dtype=torch.uint8)
    x[:, :, 240:] = 255  # right half white
    out = EvalTransform()(x)
    assert out.shape == (2, 3, 224, 224)
    # 240x480 -> 256x512, centre crop columns 144..367: the white edge sits at column 256 - 144 = 112.
    pixels = levels(out)
    assert pixels[0, :, 100, 100].max() < 1 and pixels[0, :, 100, 124].min() > 254
    assert torch.equal(out, EvalTransform()(x, rng=5))


def test_three_crop_covers_the_long_side():
    x = torch.zeros(3, 224, 448, 3, dtype=torch.uint8)
    x[..., :224, 0] = 255  # left half red
    out = ThreeCropTransform()(x)
    assert out.shape == (3, 3, 3, 224, 224)
    red = levels(out)[:, 0, 0].mean(dim=(-1, -2))
    assert red[0] > 254 and red[2] < 1 and 120 < red[1] < 135  # left crop red, right crop black, centre half
    tall = ThreeCropTransform(size=32)(torch.zeros(1, 96, 48, 3, dtype=torch.uint8))
    assert tall.shape == (3, 1, 3, 32, 32)


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8 frames"):
        EvalTransform()(torch.zeros(2, 3, 64, 64))


@pytest.mark.parametrize("factor", [-0.1, -0.02, 0.0, 0.05, 0.1, 0.5])
def test_adjust_hue_matches_torchvision(factor):
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[0] = x[0, :1]  # grey pixels
    x[1, 0] = x[1, 1]  # red == green ties
    diff = (adjust_hue(x, factor).int() - F.adjust_hue(x, factor).int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    if factor:
        assert (adjust_hue(x[2:], factor).int() - x[2:].int()).abs().float().mean() > 5


def _float_path(x: torch.Tensor, mean, std) -> torch.Tensor:
    """What the transforms returned before frames stayed uint8: the same pixels normalised on the CPU in float32."""
    return (x.float() / 255.0 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.mark.parametrize("statistics", ["clip", "imagenet"])
def test_uint8_frames_normalised_on_the_device_match_the_float_path(statistics):
    mean, std = (CLIP_MEAN, CLIP_STD) if statistics == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    x = clip(T=3, H=64, W=96)
    resized = F.resize(to_tchw(x), [36], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    cases = [
        (EvalTransform(size=32, normalization=statistics)(x), _float_path(F.center_crop(resized, [32, 32]), mean, std)),
        (
            ThreeCropTransform(size=32, scale_size=36, normalization=statistics)(x),
            torch.stack([_float_path(resized[..., 2:34, left : left + 32], mean, std) for left in (0, 11, 22)]),
        ),
    ]
    train = TrainTransform(size=32, normalization=statistics)
    cases.append((train(x, 7), _float_path(train(x, 7), mean, std)))
    for uint8_frames, float_frames in cases:
        assert uint8_frames.dtype == torch.uint8  # a quarter of float32's bytes through the DataLoader
        on_device = frames_to_device(uint8_frames, "cpu", statistics)
        assert on_device.dtype == torch.float32
        torch.testing.assert_close(on_device, float_frames, rtol=0, atol=1e-6)
    normalised = torch.randn(2, 3, 8, 8)
    assert frames_to_device(normalised, "cpu") is normalised  # float frames are normalised already


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frames_normalised_on_cuda_match_the_cpu():
    frames = EvalTransform(size=32)(clip(T=2, H=40, W=48))
    on_gpu = frames_to_device(frames, "cuda", "clip")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), normalize(frames), rtol=0, atol=1e-6)
