import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from actionclip.data import (
    AnnotationError,
    BadSample,
    BadSampleGuard,
    IndexedSamples,
    Sample,
    SeededSamples,
    ThreeCropTransform,
    TooManyBadSamples,
    VideoDataset,
    charades_csv,
    collate_skip_bad,
    folder_dataset,
    hmdb51_split,
    kinetics_csv,
    make_synthetic_dataset,
    parse_official_list,
    parse_video_list,
    read_class_names,
    ucf101_split,
    video_list_dataset,
    write_video,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def touch_videos(root, relative_paths):
    for rel in relative_paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


# ---------------------------------------------------------------- class names


def test_read_class_names_formats(tmp_path):
    assert read_class_names(write(tmp_path / "labels.csv", "id,name\n1,Biking\n0,ApplyEyeMakeup\n")) == ["ApplyEyeMakeup", "Biking"]
    assert read_class_names(write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n")) == ["ApplyEyeMakeup", "ApplyLipstick"]
    assert read_class_names(write(tmp_path / "charades.txt", "c000 Holding some clothes\nc001 Putting clothes somewhere\n")) == [
        "Holding some clothes",
        "Putting clothes somewhere",
    ]
    assert read_class_names(write(tmp_path / "k400.txt", "abseiling\nair drumming\n")) == ["abseiling", "air drumming"]
    with pytest.raises(AnnotationError, match=r"gaps.csv:3: class ids must be consecutive.*'3,c'"):
        read_class_names(write(tmp_path / "gaps.csv", "0,a\n1,b\n3,c\n"))
    with pytest.raises(AnnotationError, match=r"bad.csv:2: class id 'x' is not an integer: 'x,b'"):
        read_class_names(write(tmp_path / "bad.csv", "0,a\nx,b\n"))


# ---------------------------------------------------------------- list formats


def test_official_list(tmp_path):
    f = write(tmp_path / "train.txt", "ucf/v_Biking_g01 120 10\n\nucf/with space/v_X 7 3\n")
    samples = parse_official_list(f, root="/data")
    assert samples == [Sample("/data/ucf/v_Biking_g01", 10, 120), Sample("/data/ucf/with space/v_X", 3, 7)]
    bad = write(tmp_path / "bad.txt", "a 10 1\nb ten 2\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:2: num_frames 'ten' is not an integer: 'b ten 2'"):
        parse_official_list(bad)
    with pytest.raises(AnnotationError, match=r"short.txt:1: expected '<frame folder> <num_frames> <label>'"):
        parse_official_list(write(tmp_path / "short.txt", "a 10\n"))


def test_mmaction_and_vifi_lists(tmp_path):
    f = write(tmp_path / "hmdb_split1_train.txt", "brush_hair/a.avi 0\n# comment\ncartwheel/b.avi 1\n")
    labels = write(tmp_path / "hmdb_51_labels.csv", "id,name\n0,brush_hair\n1,cartwheel\n")
    samples, names = video_list_dataset(f, labels, root=tmp_path)
    assert samples == [Sample(str(tmp_path / "brush_hair/a.avi"), 0), Sample(str(tmp_path / "cartwheel/b.avi"), 1)]
    assert names == ["brush_hair", "cartwheel"]
    assert parse_video_list(f)[0].path == "brush_hair/a.avi"
    with pytest.raises(AnnotationError, match=r"neg.txt:1: label must be >= 0"):
        parse_video_list(write(tmp_path / "neg.txt", "a.mp4 -1\n"))
    with pytest.raises(ValueError, match="label 5 but only 2 class names"):
        video_list_dataset(write(tmp_path / "big.txt", "a.mp4 5\n"), labels)


def test_a_label_beyond_the_class_names_names_its_line(tmp_path):
    classes = write(tmp_path / "classes.csv", "id,name\n0,brush_hair\n1,cartwheel\n")
    listing = write(tmp_path / "big.txt", "a.mp4 1\n\nb.mp4 5\n")
    with pytest.raises(AnnotationError, match=r"big.txt:3: label 5 but only 2 class names: 'b.mp4 5'"):
        video_list_dataset(listing, classes)
    official = write(tmp_path / "frames.txt", "a 10 0\nb 10 2\n")
    with pytest.raises(AnnotationError, match=r"frames.txt:2: label 2 but only 2 class names: 'b 10 2'"):
        video_list_dataset(official, classes, official=True)


def test_byte_order_marks_and_other_encodings(tmp_path):
    def write_bom(path, text):
        path.write_bytes(text.encode("utf-8-sig"))  # as Windows editors save UTF-8
        return path

    assert read_class_names(write_bom(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\r\n2 YoYo\r\n")) == ["ApplyEyeMakeup", "YoYo"]
    assert read_class_names(write_bom(tmp_path / "k400.txt", "abseiling\n")) == ["abseiling"]
    assert parse_video_list(write_bom(tmp_path / "list.txt", "a.mp4 0\n")) == [Sample("a.mp4", 0)]
    csv_file = write_bom(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\nabseiling,x,1,2,train\n")
    assert kinetics_csv(csv_file, tmp_path)[1] == ["abseiling"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9.mp4 0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt: not UTF-8 text \(byte 0xe9 at offset 3\); save it as UTF-8"):
        parse_video_list(latin)


def test_kinetics_csv(tmp_path, caplog):
    csv_file = write(
        tmp_path / "train.csv",
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,--07WQ2iBlw,1,11,train\n"
        "air drumming,-0a2sqmqPqQ,14,24,train\n"
        "abseiling,gone_video_,30,40,train\n",
    )
    touch_videos(tmp_path / "videos", ["train/abseiling/--07WQ2iBlw_000001_000011.mp4", "train/air drumming/-0a2sqmqPqQ_000014_000024.mkv"])
    with caplog.at_level(logging.WARNING, "actionclip.data"):
        samples, names = kinetics_csv(csv_file, tmp_path / "videos")
    assert names == ["abseiling", "air drumming"]
    assert [(s.path.endswith(p), s.label) for s, p in zip(samples, ["_000001_000011.mp4", "_000014_000024.mkv"])] == [(True, 0), (True, 1)]
    assert "1 of 3 videos not found" in caplog.text
    with pytest.raises(FileNotFoundError, match="gone_video__000030_000040"):
        kinetics_csv(csv_file, tmp_path / "videos", missing="error")
    val = write(tmp_path / "val.csv", "label,youtube_id,time_start,time_end,split\nair drumming,-0a2sqmqPqQ,14,24,val\n")
    assert kinetics_csv(val, tmp_path / "videos", class_names=names)[0][0].label == 1
    bad = write(tmp_path / "bad.csv", "label,youtube_id,time_start,time_end,split\nabseiling,x,one,11,train\n")
    with pytest.raises(AnnotationError, match=r"bad.csv:2: time_start/time_end must be numbers: 'abseiling,x,one,11,train'"):
        kinetics_csv(bad, tmp_path)
    with pytest.raises(AnnotationError, match=r"label 'juggling' is not one of the 2 classes"):
        kinetics_csv(
            write(tmp_path / "v2.csv", "label,youtube_id,time_start,time_end,split\njuggling,x,1,2,val\n"), tmp_path, class_names=names
        )


def test_ucf101_splits(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    write(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n")
    write(splits / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\n")
    write(splits / "testlist02.txt", "YoYo/v_YoYo_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    train, names = ucf101_split(tmp_path / "UCF-101", splits, split=2, subset="train")
    assert names == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert [s.label for s in train] == [0, 1]
    assert train[1].path == str(tmp_path / "UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi")
    test, _ = ucf101_split(tmp_path / "UCF-101", splits, split=2, subset="test")
    assert [s.label for s in test] == [2, 0]
    write(splits / "trainlist03.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g08_c01.avi 2\n")
    with pytest.raises(AnnotationError, match=r"trainlist03.txt:2: label does not match class 'YoYo'"):
        ucf101_split(tmp_path, splits, split=3)


def test_hmdb51_splits(tmp_path):
    write(
        tmp_path / "brush_hair_test_split1.txt",
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nBlonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \nbrush_unused_0.avi 0 \n",
    )
    write(tmp_path / "cartwheel_test_split1.txt", "Acrobacias_cartwheel_f_cm_np1_le_bad_0.avi 2 \n")
    write(tmp_path / "cartwheel_test_split2.txt", "Acrobacias_cartwheel_f_cm_np1_le_bad_0.avi 3\n")
    train, names = hmdb51_split("/hmdb", tmp_path, split=1, subset="train")
    assert names == ["brush_hair", "cartwheel"]
    assert train == [Sample("/hmdb/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0)]
    test, _ = hmdb51_split("/hmdb", tmp_path, split=1, subset="test")
    assert [(s.path.rsplit("/", 2)[1], s.label) for s in test] == [("brush_hair", 0), ("cartwheel", 1)]
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split2.txt:1: expected '<video> <tag>'"):
        hmdb51_split("/hmdb", tmp_path, split=2)
    with pytest.raises(FileNotFoundError, match="_test_split3.txt"):
        hmdb51_split("/hmdb", tmp_path, split=3)


def test_charades_multi_label(tmp_path):
    classes = write(tmp_path / "Charades_v1_classes.txt", "".join(f"c{i:03d} action number {i}\n" for i in range(157)))
    csv_file = write(
        tmp_path / "Charades_v1_train.csv",
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
        '46GP8,HR43,Kitchen,6,7,Yes,"A person cooks, then eats.",food;table,"desc",'
        '"c092 11.90 21.20;c147 0.00 12.60;c092 25.00 30.00",24.83\n'
        "N11GT,0KZ7,Stairs,6,7,Yes,script,stairs,desc,,18.0\n",
    )
    samples, names = charades_csv(csv_file, "/charades", classes)
    assert len(names) == 157 and names[92] == "action number 92"
    assert samples == [Sample("/charades/46GP8.mp4", (92, 147)), Sample("/charades/N11GT.mp4", ())]
    bad = write(tmp_path / "bad.csv", "id,actions\nA,c001 1.0 2.0\nB,c001 x 2.0\n")
    with pytest.raises(AnnotationError, match=r"bad.csv:3: action 'c001 x 2.0' is not 'cNNN start end'"):
        charades_csv(bad, "/charades", classes)
    dataset = VideoDataset(samples, names)
    target = dataset._target(samples[0].label)
    assert target.shape == (157,) and target.sum() == 2 and target[92] == 1 and target[147] == 1


def test_folder_per_class(tmp_path):
    touch_videos(tmp_path, ["PlayingGuitar/a.mp4", "PlayingGuitar/sub/b.avi", "Swimming/c.mkv", "Swimming/notes.txt"])
    (tmp_path / "Empty").mkdir()
    samples, names = folder_dataset(tmp_path)
    assert names == ["Empty", "PlayingGuitar", "Swimming"]
    assert [(s.path[len(str(tmp_path)) + 1 :], s.label) for s in samples] == [
        ("PlayingGuitar/a.mp4", 1),
        ("PlayingGuitar/sub/b.avi", 1),
        ("Swimming/c.mkv", 2),
    ]
    assert VideoDataset(samples, names).classes == ["empty", "playing guitar", "swimming"]


# ---------------------------------------------------------------- VideoDataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        shapes=("circle", "square"),
        colours=("red", "blue"),
        motions=("left", "right"),
        clips_per_class=2,
        size=32,
        num_frames=12,
        seed=0,
    )


def test_dataset_items_and_classes(synthetic):
    samples, names = video_list_dataset(synthetic.list_file, synthetic.classes_file, root=synthetic.root)
    ds = VideoDataset(samples, names, num_frames=8, mode="train", seed=0)
    assert len(ds) == 16 and ds.classes == synthetic.classes and ds.classes[1] == "red circle moving right"
    frames, label = ds[3]
    assert frames.shape == (8, 3, 224, 224) and frames.dtype == torch.uint8 and label == 1  # normalised on the device
    assert ds.normalization == "clip"
    assert torch.equal(ds[3][0], frames)  # same seed, epoch and index: same clip
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], frames)
    override = VideoDataset(samples, names, class_texts=[f"class {i}" for i in range(8)])
    assert override.classes[7] == "class 7"


def test_samples_are_kept_in_arrays_and_read_back_as_samples(tmp_path):
    given = [Sample(str(tmp_path / "a b.mp4"), 2), Sample("vidéo/\udcff.mp4", 0, 40), Sample("c", (0, 2)), Sample("d", (1,))]
    ds = VideoDataset(given, ["x", "y", "z"])
    # A few numpy arrays, not one Python object per sample that every forked DataLoader worker would copy.
    assert not isinstance(ds.samples, list)
    assert {type(v) for v in vars(ds.samples).values()} == {np.ndarray}
    assert len(ds.samples) == 4 and list(ds.samples) == given and ds.samples[-1] == given[-1]
    assert ds.samples[1].num_frames == 40 and ds.samples[0].num_frames is None
    with pytest.raises(IndexError):
        ds.samples[4]
    assert list(VideoDataset(ds.samples, ["x", "y", "z"]).samples) == given
    with pytest.raises(ValueError, match="label 2 but only 2 class names"):
        VideoDataset(given, ["x", "y"])


def test_indexed_samples_keep_their_indices_in_an_array(synthetic):
    ds = VideoDataset(synthetic.samples, synthetic.classes, num_frames=4, mode="test")
    mine = IndexedSamples(ds, range(1, 16, 4))
    assert isinstance(mine.indices, np.ndarray) and len(mine) == 4
    assert mine[1][2] == 5 and type(mine[1][2]) is int


def test_dataset_test_mode_and_multi_view(synthetic):
    ds = VideoDataset(synthetic.samples, synthetic.classes, num_frames=4, mode="test")
    frames, _ = ds[0]
    assert frames.shape == (4, 3, 224, 224)
    assert torch.equal(ds[0][0], frames)
    views = VideoDataset(
        synthetic.samples, synthetic.classes, num_frames=4, mode="test", num_clips=2, transform=ThreeCropTransform(size=32)
    )
    frames, label = views[5]
    assert frames.shape == (6, 4, 3, 32, 32) and label == 2


def test_multi_view_uses_the_sampled_clips(tmp_path):
    # Frame i of this video is filled with grey level 10 * i: the decoded clip tells which frames were read.
    path = write_video(tmp_path / "levels.mp4", [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(24)], fps=8, lossless=True)
    plain = VideoDataset(
        [Sample(str(path), 0)], ["a"], num_frames=4, mode="test", num_clips=3, transform=lambda x, rng: x.permute(0, 3, 1, 2).float()
    )
    frames, _ = plain[0]
    levels = frames[:, :, 0, 16, 16] / 10
    assert frames.shape == (3, 4, 3, 32, 32)
    np.testing.assert_allclose(levels.numpy(), [[0, 6, 12, 18], [2, 8, 14, 20], [4, 10, 16, 22]], atol=0.2)


def test_bad_videos_are_skipped_and_counted(synthetic, tmp_path, caplog):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    samples = list(synthetic.samples[:6]) + [
        Sample(str(tmp_path / "empty.mp4"), 0),
        Sample(str(tmp_path / "missing.mp4"), 1),
        Sample(str(tmp_path / "text.mp4"), 2),
    ]
    ds = VideoDataset(samples, synthetic.classes, num_frames=4, seed=0)
    bad = ds[6]
    assert isinstance(bad, BadSample) and bad.index == 6 and bad.reason == "empty file (0 bytes)"
    strict = VideoDataset(samples, synthetic.classes, num_frames=4, skip_bad=False)
    with pytest.raises(Exception, match="missing.mp4: file not found"):
        strict[7]
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad)
    guard = BadSampleGuard(max_fraction=0.5)
    with caplog.at_level(logging.WARNING, "actionclip.data"):
        batches = list(guard.epoch(loader))
    assert [len(frames) for frames, _ in batches] == [4, 2]  # the last batch was all bad
    assert batches[1][1].tolist() == [2, 2]  # samples 4 and 5
    assert sorted(b.index for b in guard.bad) == [6, 7, 8] and guard.seen == 9
    assert "skipped 3 of 9 videos" in caplog.text and "text.mp4" in caplog.text
    # 20% of the 9 videos is 1.8: the guard stops at the second bad video, before the epoch ends.
    with pytest.raises(TooManyBadSamples, match="2 of 9 videos are unreadable"):
        list(BadSampleGuard(max_fraction=0.2).epoch(loader))


def test_evaluation_items_carry_their_dataset_index_and_training_replaces_bad_ones(synthetic, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    ds = VideoDataset([Sample(str(tmp_path / "empty.mp4"), 0)] + list(synthetic.samples[:3]), synthetic.classes, num_frames=4, seed=0)
    (batch,) = DataLoader(IndexedSamples(ds, [3, 0, 2]), batch_size=3, collate_fn=collate_skip_bad)
    assert batch.indices.tolist() == [3, 2] and len(batch.frames) == 2 and [b.index for b in batch.bad] == [0]
    # Training keeps the batch full: the unreadable video 0 is replaced by video 1, and still reported.
    (batch,) = DataLoader(SeededSamples(ds), batch_size=2, sampler=[(0, 11), (2, 12)], collate_fn=collate_skip_bad)
    assert batch.indices.tolist() == [1, 2] and batch.seeds.tolist() == [11, 12] and len(batch.frames) == 2
    assert [b.path for b in batch.bad] == [str(tmp_path / "empty.mp4")]


def test_dataloader_workers_give_the_same_clips(synthetic):
    ds = VideoDataset(synthetic.samples, synthetic.classes, num_frames=4, seed=3, transform=lambda x, rng: x.permute(0, 3, 1, 2).float())
    serial = [b.frames for b in DataLoader(ds, batch_size=8, collate_fn=collate_skip_bad)]
    parallel = [b.frames for b in DataLoader(ds, batch_size=8, collate_fn=collate_skip_bad, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))


def test_short_video_count_is_corrected_at_read(tmp_path):
    # The list claims 50 frames; the folder has 5. Sampling is redone within the 5.
    folder = tmp_path / "v"
    folder.mkdir()
    from PIL import Image

    for i in range(5):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"img_{i + 1:05d}.png")
    ds = VideoDataset(
        [Sample(str(folder), 0, 50)],
        ["a"],
        num_frames=8,
        mode="test",
        frame_template="img_{:05d}.png",
        transform=lambda x, rng: x.permute(0, 3, 1, 2).float(),
    )
    frames, _ = ds[0]
    assert (frames[:, 0, 0, 0] / 40).round().tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
