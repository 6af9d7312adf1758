from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from actionclip.data import VideoFile, VideoReadError, count_frames, read_frames, sample_indices, write_video

PEER_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos"
MP4 = "mmaction2_demo_arm_wrestling.mp4"
AVI = "mmaction2_test_eye_makeup.avi"


@pytest.fixture(scope="session")
def peer_videos() -> Path:
    if not (PEER_VIDEOS / MP4).is_file():
        pytest.skip(f"peer videos not found at {PEER_VIDEOS} (clone with shared/ beside the repo)")
    return PEER_VIDEOS


def textured_frames(n: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Frames that differ from each other (a moving gradient, a moving block and fixed noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    x = np.arange(width)[None, :, None]
    frames = []
    for i in range(n):
        image = ((x * 3 + i * 5) % 200).astype(np.uint8) + noise
        image = np.broadcast_to(image, (height, width, 3)).copy()
        image[4:16, (2 * i) % (width - 12) : (2 * i) % (width - 12) + 12] = (250, 20, 20)
        frames.append(image)
    return frames


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    frames = textured_frames(90)
    out = {
        "gop10": write_video(d / "gop10.mp4", frames, fps=25, gop=10),
        "default_gop": write_video(d / "default_gop.mp4", frames, fps=25),
        "mkv": write_video(d / "gop15.mkv", frames[:60], fps=30, gop=15),
        "avi": write_video(d / "mpeg4.avi", frames[:40], fps=25),
        "three": write_video(d / "three.mp4", frames[:3], fps=25),
        # Variable frame rate: gaps of 40 ms and 120 ms.
        "vfr": write_video(
            d / "vfr.mp4", frames[:30], fps=25, gop=6, timestamps_ms=np.cumsum([0] + [40 if i % 3 else 120 for i in range(1, 30)]).tolist()
        ),
        "rotated": write_video(d / "rotated.mp4", frames[:4], fps=25, rotation=90),
    }
    data = out["mkv"].read_bytes()
    (d / "truncated.mkv").write_bytes(data[: len(data) // 2])
    data = out["default_gop"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    out.update(
        truncated_mkv=d / "truncated.mkv",
        truncated_mp4=d / "truncated.mp4",
        empty=d / "empty.mp4",
        text=d / "text.mp4",
        missing=d / "missing.mp4",
    )
    return out


def assert_sparse_equals_full(path, rng, T_values=(1, 3, 8, 32)):
    full = full_decode(path)
    n = len(full)
    assert count_frames(path) == n
    for T in T_values:
        for _ in range(6):
            idx = sample_indices(n, T, "train", rng)
            shuffled = [int(i) for i in rng.permutation(idx)] + [idx[0], idx[-1]]
            out = read_frames(path, shuffled)
            assert out.dtype == np.uint8 and out.shape == (len(shuffled),) + full.shape[1:]
            np.testing.assert_array_equal(out, full[shuffled])


@pytest.mark.parametrize("name", ["gop10", "default_gop", "mkv", "avi", "vfr", "three"])
def test_sparse_read_is_pixel_identical_to_full_decode(videos, name):
    assert_sparse_equals_full(videos[name], np.random.default_rng(0))


def test_peer_videos_sparse_equals_full(peer_videos):
    assert count_frames(peer_videos / MP4) == 280
    assert count_frames(peer_videos / AVI) == 164  # the AVI also has an audio stream
    assert_sparse_equals_full(peer_videos / MP4, np.random.default_rng(1), T_values=(8, 32))
    assert_sparse_equals_full(peer_videos / AVI, np.random.default_rng(2), T_values=(8,))
    frames = read_frames(peer_videos / MP4, [279, 0])
    assert frames.shape == (2, 256, 340, 3)
    assert read_frames(peer_videos / AVI, [163]).shape == (1, 240, 320, 3)


def test_dense_key_frames_are_reached_by_seeking(videos, peer_videos):
    # Key frames every 10 frames: spread-out indices are read by seeks, not one long forward pass.
    # (x264 may add scene-cut key frames, so only the GOP bound is fixed.)
    plan = VideoFile(videos["gop10"])._plan([5, 35, 65, 85])
    assert [run for _, run in plan] == [[5], [35], [65], [85]]
    assert all(start is not None and 0 <= target - start < 10 for start, (target,) in plan[1:])
    # The real clip has key frames at 0, 187, 230, 268 only: 10 -> 150 is one forward pass, 200 and 270
    # are reached from the key frames before them, and 240 -> 250 continues forward rather than seek to 230.
    video = VideoFile(peer_videos / MP4)
    assert video._keyframes == [0, 187, 230, 268]
    assert video._plan([10, 150, 200, 270]) == [(None, [10, 150]), (187, [200]), (268, [270])]
    assert video._plan([10, 240, 250]) == [(None, [10]), (230, [240, 250])]


def test_avi_is_read_sequentially_by_frame_count(peer_videos):
    # Packed B-frames in AVI give out-of-order timestamps; frames are counted instead.
    video = VideoFile(peer_videos / AVI)
    assert video.num_frames == 164 and video._pts == []


def test_vfr_frames_are_found_by_order_not_by_frame_rate(videos):
    full = full_decode(videos["vfr"])
    assert len(full) == 30
    # With a constant-rate assumption, frame 29 (at 1.52 s) would be looked up at 29/25 = 1.16 s.
    np.testing.assert_array_equal(read_frames(videos["vfr"], [29, 10]), full[[29, 10]])


def test_three_frame_video(videos):
    assert count_frames(videos["three"]) == 3
    idx = sample_indices(3, 8, "train", 0)
    assert read_frames(videos["three"], idx).shape == (8, 48, 64, 3)
    with pytest.raises(VideoReadError, match="only 3 frames") as info:
        read_frames(videos["three"], [3])
    assert info.value.num_frames == 3


def test_rotation_metadata_is_applied(videos):
    frames = read_frames(videos["rotated"], [0])
    assert frames.shape == (1, 64, 48, 3)  # stored 64x48 landscape, displayed portrait
    stored = full_decode(videos["rotated"])[0]
    np.testing.assert_array_equal(frames[0], np.rot90(stored))


def test_truncated_mkv_decodes_what_is_there(videos):
    n = count_frames(videos["truncated_mkv"])
    assert 0 < n < 60
    full = full_decode(videos["truncated_mkv"])
    assert len(full) == n
    np.testing.assert_array_equal(read_frames(videos["truncated_mkv"], [n - 1, 0]), full[[n - 1, 0]])
    assert VideoFile(videos["truncated_mkv"]).header_frames == 60


def test_a_truncated_video_says_how_much_could_be_read(videos):
    truncated = VideoFile(videos["truncated_mkv"])  # 60 frames at 30 fps, cut in half
    assert truncated.shortfall == f"only {truncated.num_frames / 30:.1f} s of 2.0 s could be decoded"
    assert truncated.num_frames < 40
    assert VideoFile(videos["mkv"]).shortfall is None and VideoFile(videos["vfr"]).shortfall is None


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated_mp4", "cannot open as a video"),  # moov atom at the end is lost
        ("empty", "empty file"),
        ("text", "cannot open as a video"),
        ("missing", "file not found"),
    ],
)
def test_bad_files_raise_clear_errors(videos, name, reason):
    with pytest.raises(VideoReadError, match=reason) as info:
        read_frames(videos[name], [0])
    assert str(videos[name]) in str(info.value)
    with pytest.raises(VideoReadError):
        count_frames(videos[name])


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoReadError, match="sound.wav: no video stream"):
        read_frames(path, [0])


def test_rejects_empty_and_negative_indices(videos):
    with pytest.raises(ValueError, match="no frame indices"):
        read_frames(videos["three"], [])
    with pytest.raises(ValueError, match=">= 0"):
        read_frames(videos["three"], [-1])


def test_frame_folder_default_and_custom_template(tmp_path):
    frames = textured_frames(5, 32, 24)
    official = tmp_path / "official"
    official.mkdir()
    custom = tmp_path / "custom"
    custom.mkdir()
    for i, image in enumerate(frames):
        Image.fromarray(image).save(official / f"img_{i + 1:05d}.png")  # PNG is lossless: exact comparison
        Image.fromarray(image).save(custom / f"frame{i:04d}.png")
    template = "img_{:05d}.png"
    assert count_frames(official, template=template) == 5
    np.testing.assert_array_equal(read_frames(official, [4, 0, 4], template=template), np.stack(frames)[[4, 0, 4]])
    assert count_frames(custom, template="frame{:04d}.png", offset=0) == 5
    np.testing.assert_array_equal(read_frames(custom, [2], template="frame{:04d}.png", offset=0)[0], frames[2])
    with pytest.raises(VideoReadError, match="folder has 5 frames"):
        read_frames(official, [5], template=template)
    with pytest.raises(VideoReadError, match="no frames named like 'img_00001.jpg'"):
        count_frames(custom)


def test_frame_folder_jpeg_layout(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (32, 24), colour).save(tmp_path / f"img_{i + 1:05d}.jpg", quality=95)
    out = read_frames(tmp_path, [1, 2])
    assert out.shape == (2, 24, 32, 3)
    assert np.abs(out.astype(int) - np.array(colours[1:])[:, None, None, :]).max() <= 3
    (tmp_path / "img_00002.jpg").write_bytes(b"broken")
    with pytest.raises(VideoReadError, match="img_00002.jpg"):
        read_frames(tmp_path, [1])


def test_timestamp_table_contradicted_by_decoder_falls_back_to_counting(videos):
    video = VideoFile(videos["gop10"])
    # Pretend the timestamps lied: swap the frame numbers of a wanted frame and the one before it.
    a, b = video._pts[44], video._pts[45]
    video._index_of_pts[a], video._index_of_pts[b] = 45, 44
    full = full_decode(videos["gop10"])
    np.testing.assert_array_equal(video.read([45, 2, 80]), full[[45, 2, 80]])
    assert video._pts == []  # later reads count frames


def test_decoding_scales_large_frames_down_to_the_short_side(tmp_path):
    # Smooth content, so area averaging and a resize of the full-size frames must agree closely.
    y, x = np.mgrid[0:240, 0:320]
    frames = [np.stack([(x + 4 * t) % 256, (y + 2 * t) % 256, (x + y) // 3], -1).astype(np.uint8) for t in range(6)]
    path = write_video(tmp_path / "big.mp4", frames, lossless=True)
    full = read_frames(path, [1, 4])
    small = VideoFile(path, short_side=120).read([1, 4])
    assert small.shape == (2, 120, 160, 3)
    reference = np.stack([np.asarray(Image.fromarray(f).resize((160, 120), Image.BOX)) for f in full])
    # The wrap-around edges of the ramps differ by filter; everywhere else within a grey level or two.
    assert np.median(np.abs(small.astype(int) - reference)) <= 2
    # A short side at or under the target: the frames as decoded, pixel for pixel.
    assert np.array_equal(VideoFile(path, short_side=240).read([1, 4]), full)
    tall = write_video(tmp_path / "tall.mp4", [np.ascontiguousarray(f.transpose(1, 0, 2)) for f in frames], lossless=True)
    assert VideoFile(tall, short_side=120).read([0]).shape == (1, 160, 120, 3)


def test_decoder_threads_follow_torch_and_give_the_same_frames(videos, monkeypatch):
    import torch

    import actionclip.video.decode as decode

    threads = []

    def recording(container, path):
        stream = original(container, path)
        threads.append(stream.codec_context.thread_count)
        return stream

    original = decode.video_stream
    monkeypatch.setattr(decode, "video_stream", recording)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in a DataLoader worker
        one = VideoFile(videos["default_gop"]).read([3, 40, 85])
        assert set(threads) == {1}
        torch.set_num_threads(2)
        threads.clear()
        np.testing.assert_array_equal(VideoFile(videos["default_gop"]).read([3, 40, 85]), one)
        assert set(threads) == {2}
    finally:
        torch.set_num_threads(previous)
