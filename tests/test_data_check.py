import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actionclip.cli.main import main as actionclip_main
from actionclip.data import check_video, write_video
from actionclip.data.check import config_targets
from actionclip.engine.config import load_config

PEER_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos"


def main(argv):
    """``actionclip data ARGV``."""
    return actionclip_main(["data", *argv])


def frames(n, size=32):
    return [np.full((size, size, 3), (7 * i) % 256, np.uint8) for i in range(n)]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "videos"
    (d / "a").mkdir(parents=True)
    write_video(d / "a" / "good.mp4", frames(20))
    write_video(d / "a" / "three.mp4", frames(3))
    mkv = write_video(tmp_path / "long.mkv", frames(60), gop=10)
    data = mkv.read_bytes()
    (d / "a" / "truncated.mkv").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello\n")
    (d / "notes.txt").write_text("not a video, not listed")
    return d


def test_check_video_reasons(folder):
    assert check_video(str(folder / "a" / "good.mp4")).problem is None
    assert check_video(str(folder / "a" / "good.mp4")).num_frames == 20
    assert check_video(str(folder / "a" / "three.mp4"), min_frames=8).problem == "short: 3 frames (fewer than 8)"
    result = check_video(str(folder / "a" / "truncated.mkv"))
    assert result.problem.startswith("truncated:") and "the header says 60" in result.problem
    assert check_video(str(folder / "empty.mp4")).problem == "empty file (0 bytes)"
    assert check_video(str(folder / "text.mp4")).problem.startswith("cannot open as a video")
    assert check_video(str(folder / "gone.mp4")).problem == "file not found"


def test_cli_on_directory_json(folder, capsys):
    assert main(["check", str(folder), "--json", "--workers", "2", "--min-frames", "8"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == 5 and report["ok"] == 1
    problems = {Path(b["path"]).name: b["problem"] for b in report["bad"]}
    assert set(problems) == {"three.mp4", "truncated.mkv", "empty.mp4", "text.mp4"}
    assert problems["three.mp4"] == "short: 3 frames (fewer than 8)"


def test_cli_on_list_file_text_report(folder, capsys):
    listing = folder / "list.txt"
    listing.write_text("a/good.mp4 0\na/three.mp4 1\nmissing.mp4 1\n")
    assert main(["check", str(listing), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert f"BAD  {folder / 'missing.mp4'}: file not found" in out
    assert "checked 3 videos" in out and "2 ok, 1 bad" in out
    listing.write_text("a/good.mp4 0\n")
    assert actionclip_main(["data", "check", str(listing), "--workers", "0"]) == 0


def test_cli_on_official_frame_list(tmp_path, capsys):
    for name, n in (("v1", 4), ("v2", 2)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"img_{i + 1:05d}.jpg")
    (tmp_path / "v2" / "img_00002.jpg").write_bytes(b"corrupt")
    listing = tmp_path / "train.txt"
    listing.write_text("v1 4 0\nv2 2 1\nv1 9 0\n")
    assert main(["check", str(listing), "--json", "--workers", "0"]) == 1
    bad = {(Path(b["path"]).name, b["problem"].split(" (")[0]) for b in json.loads(capsys.readouterr().out)["bad"]}
    assert bad == {("v2", "unreadable frame image"), ("v1", "only 4 frames decode, the list says 9")}


def test_cli_errors(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.txt")]) == 2
    assert "no such list file or directory" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("a.mp4 zero\n")
    assert main(["check", str(bad)]) == 2
    assert "bad.txt:1: label 'zero' is not an integer" in capsys.readouterr().err


def test_cli_peer_videos_are_fine(capsys):
    if not PEER_VIDEOS.is_dir():
        pytest.skip("peer videos not found")
    assert main(["check", str(PEER_VIDEOS), "--workers", "0", "--min-frames", "8"]) == 0
    assert "checked 2 videos" in capsys.readouterr().out


def test_check_a_config_covers_train_and_val(tmp_path):
    from actionclip.data.synthetic import make_synthetic_dataset

    written = make_synthetic_dataset(tmp_path / "d", shapes=["circle"], colours=["red", "blue"], motions=["left"], clips_per_class=2)
    val_list = tmp_path / "d" / "val.txt"
    val_list.write_text("videos/missing.mp4 0\n")
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"data:\n  format: list\n  root: {tmp_path / 'd'}\n  train: {written.list_file}\n  val: {val_list}\n  classes: {written.classes_file}\n"
    )
    targets = config_targets(load_config(config).data)
    assert len(targets) == 5 and targets[-1][0].endswith("videos/missing.mp4")
    from actionclip.cli.main import main

    assert main(["data", "check", str(config), "--workers", "0"]) == 1


def test_cli_nothing_to_check_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a video")
    assert main(["check", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'empty'}: no videos found (by extension: .mp4, .avi, .mkv, ...)"]
    listing = tmp_path / "list.txt"
    listing.write_text("# nothing listed yet\n")
    assert main(["check", str(listing)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {listing}: no videos found"]


def test_cli_broken_symbolic_links_are_bad_files(tmp_path, capsys):
    links = tmp_path / "links"
    links.mkdir()
    write_video(tmp_path / "good.mp4", frames(4))
    (links / "good.mp4").symlink_to(tmp_path / "good.mp4")
    (links / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    assert main(["check", str(links), "--workers", "0"]) == 1
    bad, summary = capsys.readouterr().out.splitlines()
    assert bad == f"BAD  {links / 'gone.mp4'}: broken symbolic link (to {tmp_path / 'deleted.mp4'})"
    assert summary.startswith("checked 2 videos") and summary.endswith("1 ok, 1 bad")
