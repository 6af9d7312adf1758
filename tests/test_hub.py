"""Published checkpoints by name: the registry, downloads from a local HTTP server on 127.0.0.1 (first download,
cache, resume, checksum, 404, no server, mirror), user model lists, and a malicious pickle that is never run."""

import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import actionclip
from actionclip import CheckpointError
from actionclip.checkpoints import hub, registry
from actionclip.checkpoints.download import hub_cache
from actionclip.cli.main import main
from actionclip.data import write_video
from actionclip.engine.config import ModelConfig
from actionclip.engine.run import model_from_config
from conftest import random_video


class Server:
    """http.server in a thread: serves ``files``, counts requests, honours Range, and can cut, corrupt or 404, send
    a body without end, drip a byte at a time, or state any Content-Length."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_once: set[str] = set()
        self.wrong: set[str] = set()
        self.stall: set[str] = set()
        self.endless: set[str] = set()  # zeros with no Content-Length (64 MiB at most, so that a test always ends)
        self.drip: set[str] = set()  # one byte every 0.2 s (40 at most)
        self.length: dict[str, str] = {}  # the Content-Length header sent instead of the true one
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.stall:
                    time.sleep(2)
                    return
                if self.path in server.endless:
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(64):
                            self.wfile.write(bytes(1 << 20))
                    except OSError:  # the client stopped reading
                        pass
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                if self.path in server.wrong:
                    data = bytes(len(data))
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", server.length.get(self.path, str(len(data) - start)))
                self.end_headers()
                if self.path in server.drip:
                    try:
                        for byte in data[start : start + 40]:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    return
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTIONCLIP_HUB_MIRROR", raising=False)
    monkeypatch.delenv("ACTIONCLIP_MODELS", raising=False)
    return tmp_path / "cache" / "hub"


def _official_bytes(model) -> bytes:
    """``model`` (ActionCLIP, Transf) as the official train.py saves it: CLIP keys under ``module.``, the fusion apart."""
    clip, fusion = {}, {}
    for key, value in model.state_dict().items():
        if key.startswith("video.temporal."):
            fusion["module." + key[len("video.temporal.") :]] = value.half()
        elif key.startswith("video."):
            clip["module." + key[len("video.") :]] = value.half()
        else:
            clip["module." + key.removeprefix("text.")] = value.half()
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "model_state_dict": clip, "fusion_model_state_dict": fusion}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", num_frames=4, seed=0).eval()
    return model, _official_bytes(model)


def _user_list(tmp_path, monkeypatch, entries) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(entries))
    monkeypatch.setenv("ACTIONCLIP_MODELS", str(path))
    return path


def _official_entry(url, data, **extra):
    return {
        "name": "team-tiny",
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": "official",
        "visual_prompt": "Transf",
        "num_frames": 4,
        **extra,
    }


def _features(model):
    video = random_video(batch=1, frames=4)
    with torch.no_grad():
        return model.encode_video(video), model.encode_text(model.tokenize(["a video of swimming"]))


def _cache_files(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_first_download_converts_once_and_later_calls_make_no_request(tiny, server, tmp_path, monkeypatch, capsys, cache):
    model, data = tiny
    server.files["/tiny.pt"] = data
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    loaded = actionclip.create_model("team-tiny")
    assert "tiny.pt" in capsys.readouterr().err  # the progress bar names the file
    assert server.requests == [("/tiny.pt", None)]
    expected = _features(actionclip.from_official_checkpoint(cache / "files" / "tiny.pt", "Transf", 4))
    for ours, theirs in zip(_features(loaded), expected):
        assert torch.equal(ours, theirs)
    assert _cache_files(cache) == [
        "files/tiny.pt",
        "models/team-tiny/config.json",
        "models/team-tiny/model.safetensors",
        "models/team-tiny/source.json",
    ]
    server.close()  # offline from now on
    again = actionclip.create_model("team-tiny")
    assert len(server.requests) == 1
    for ours, theirs in zip(_features(again), expected):
        assert torch.equal(ours, theirs)
    assert isinstance(model_from_config(ModelConfig(checkpoint="team-tiny")), actionclip.ActionCLIP)  # eval --checkpoint NAME


def test_a_cut_download_is_resumed_with_a_range_request(tiny, server, tmp_path, monkeypatch, cache):
    _, data = tiny
    server.files["/tiny.pt"] = data
    server.cut_once.add("/tiny.pt")
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    with pytest.raises(CheckpointError, match=r"connection cut after \d+ of \d+ bytes.*next call resumes it"):
        actionclip.create_model("team-tiny")
    assert _cache_files(cache) == ["files/tiny.pt.part"]  # only the partial file, under its own name
    half = (cache / "files" / "tiny.pt.part").stat().st_size
    assert 0 < half < len(data)
    actionclip.create_model("team-tiny")
    assert server.requests == [("/tiny.pt", None), ("/tiny.pt", f"bytes={half}-")]
    assert (cache / "files" / "tiny.pt").read_bytes() == data


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def _predict(name) -> list[str]:
    return ["predict", "nothing.mp4", "--labels", "a,b", "--model", name, "--device", "cpu"]


def test_checksum_mismatch_deletes_the_file_and_says_so(tiny, server, tmp_path, monkeypatch, capsys, cache):
    _, data = tiny
    server.files["/tiny.pt"] = data
    server.wrong.add("/tiny.pt")
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert "checksum mismatch for team-tiny" in line and "the file was deleted" in line
    assert _cache_files(cache) == []


def test_a_published_sha256_prefix_is_checked(tiny, server, tmp_path, monkeypatch, cache):
    _, data = tiny
    server.files["/tiny.pt"] = data
    entry = _official_entry(server.url + "/tiny.pt", data)
    entry["sha256_prefix"] = "0" * 8 if not entry.pop("sha256").startswith("0" * 8) else "f" * 8
    _user_list(tmp_path, monkeypatch, [entry])
    with pytest.raises(CheckpointError, match="expected a sha256 starting with"):
        actionclip.create_model("team-tiny")
    assert _cache_files(cache) == []


def test_404_and_no_server_name_the_url_and_the_mirror_option(tiny, server, tmp_path, monkeypatch, capsys, cache):
    _, data = tiny
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/tiny.pt"
    _user_list(
        tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data), {**_official_entry(dead, data), "name": "team-dead"}]
    )
    line = _cli_error(capsys, _predict("team-tiny"))
    assert f"{server.url}/tiny.pt: HTTP 404" in line and "ACTIONCLIP_HUB_MIRROR" in line and "--hub-mirror" in line
    line = _cli_error(capsys, _predict("team-dead"))
    assert f"{dead}: cannot connect" in line and "--hub-mirror" in line
    assert _cache_files(cache) == []


def test_a_timeout_names_the_url_and_leaves_nothing(tiny, server, tmp_path, monkeypatch, capsys, cache):
    from actionclip.checkpoints import download

    _, data = tiny
    server.stall.add("/tiny.pt")
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert f"{server.url}/tiny.pt: timed out" in line and "--hub-mirror" in line
    assert _cache_files(cache) == []


def test_a_body_without_end_stops_at_the_cap_or_the_entry_size_and_leaves_nothing(tiny, server, tmp_path, monkeypatch, capsys, cache):
    from actionclip.checkpoints import download

    _, data = tiny
    server.endless.add("/tiny.pt")
    monkeypatch.setattr(download, "MAX_BYTES", 1 << 20, raising=False)  # no size stated: the cap for every download
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert f"{server.url}/tiny.pt: sent more than {1 << 20} bytes, the most a download may have unless its entry states a size" in line
    assert _cache_files(cache) == []
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data, size=len(data))])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert f"{server.url}/tiny.pt: sent more than the {len(data)} bytes that its entry states (size); the partial file was deleted" in line
    assert _cache_files(cache) == []
    server.endless.clear()
    server.files["/tiny.pt"] = data  # a Content-Length over the bound is refused before a byte is written
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data, size=len(data) - 1)])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert f"{server.url}/tiny.pt: announces {len(data)} bytes, more than the {len(data) - 1} bytes that its entry states (size)" in line
    assert _cache_files(cache) == []


def test_a_server_that_sends_a_byte_at_a_time_meets_the_total_time_bound(tiny, server, tmp_path, monkeypatch, capsys, cache):
    from actionclip.checkpoints import download

    _, data = tiny
    server.files["/tiny.pt"] = data
    server.drip.add("/tiny.pt")  # each read gets a byte long before the per-read timeout
    monkeypatch.setattr(download, "TOTAL_TIMEOUT_S", 1.0, raising=False)
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    started = time.monotonic()
    line = _cli_error(capsys, _predict("team-tiny"))
    assert time.monotonic() - started < 4
    assert f"{server.url}/tiny.pt: not done after 1 s (" in line and "the next call resumes it" in line
    assert _cache_files(cache) == ["files/tiny.pt.part"]


def test_a_content_length_that_is_no_number_names_the_url(tiny, server, tmp_path, monkeypatch, capsys, cache):
    _, data = tiny
    server.files["/mirror/tiny.pt"] = data
    server.length["/mirror/tiny.pt"] = "abc"
    _user_list(tmp_path, monkeypatch, [_official_entry("https://publisher.invalid/tiny.pt", data)])
    line = _cli_error(capsys, [*_predict("team-tiny"), "--hub-mirror", server.url + "/mirror"])
    assert f"{server.url}/mirror/tiny.pt: its Content-Length 'abc' is not a number of bytes" in line
    assert _cache_files(cache) == []


def test_a_model_list_with_yaml_aliases_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    # Each level of aliases multiplies the expanded text by 9: `models --json` printed 20 MB for 460 bytes, 9 levels
    # would be about 20 GB.
    levels = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 5)]
    path = tmp_path / "models.yaml"
    path.write_text(
        "- name: x\n  url: http://127.0.0.1:9/x.pt\n  format: videox\n  accuracy:\n" + "".join(f"    {level}\n" for level in levels)
    )
    monkeypatch.setenv("ACTIONCLIP_MODELS", str(path))
    line = _cli_error(capsys, ["models", "--json"])
    assert line == f"error: {path}: line 6: *l0 is a YAML alias, which a model list does not take; write the value out"
    assert capsys.readouterr().out == ""


def test_a_published_name_loads_through_checkpoint_as_through_model(tiny, server, tmp_path, monkeypatch, capsys):
    _, data = tiny
    server.files["/tiny.pt"] = data
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/tiny.pt", data)])
    video = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8))
    results = []
    for option in ("--model", "--checkpoint"):
        assert main(["predict", str(video), "--labels", "a,b", option, "team-tiny", "--json", "--workers", "0", "--device", "cpu"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["labels"] == results[1]["labels"] and results[0]["scores"] == pytest.approx(results[1]["scores"], abs=1e-6)


def test_a_mirror_serves_the_same_file_names(tiny, server, tmp_path, monkeypatch, capsys, cache):
    _, data = tiny
    server.files["/mirror/tiny.pt"] = data
    _user_list(tmp_path, monkeypatch, [_official_entry("https://publisher.invalid/files/tiny.pt", data)])
    monkeypatch.setenv("ACTIONCLIP_HUB_MIRROR", server.url + "/mirror/")
    assert isinstance(actionclip.create_model("team-tiny"), actionclip.ActionCLIP)
    assert server.requests == [("/mirror/tiny.pt", None)]
    server.files["/mirror/actionclip-vit-b-32-8f-k400.pt"] = data  # a built-in entry that has no direct download
    monkeypatch.delenv("ACTIONCLIP_HUB_MIRROR")
    line = _cli_error(capsys, _predict("actionclip-vit-b-32-8f-k400"))
    assert "no direct download" in line and "drive.google.com" in line
    assert f"save the file as {cache / 'files' / 'actionclip-vit-b-32-8f-k400.pt'}" in line
    # --hub-mirror: the same file, the entry's own checksum (none is published for the official files)
    video = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8))
    argv = [
        "predict",
        str(video),
        "--labels",
        "a,b",
        "--model",
        "actionclip-vit-b-32-8f-k400",
        "--json",
        "--workers",
        "0",
        "--hub-mirror",
        server.url + "/mirror",
    ]
    with pytest.warns(hub.UnverifiedDownloadWarning, match="states no checksum; the downloaded file's sha256 is"):
        assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["labels"] in (["a", "b"], ["b", "a"])
    assert server.requests[-1] == ("/mirror/actionclip-vit-b-32-8f-k400.pt", None)
    assert (cache / "models" / "actionclip-vit-b-32-8f-k400" / "model.safetensors").is_file()


def test_user_lists_add_our_own_format_by_file_url_to_the_listing(tiny, tmp_path, monkeypatch, capsys):
    model, _ = tiny
    actionclip.save(model, tmp_path / "ours")
    archive = tmp_path / "ours.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(tmp_path / "ours", arcname="ours")
    data = archive.read_bytes()
    path = _user_list(
        tmp_path,
        monkeypatch,
        [{"name": "team-ours", "url": archive.as_uri(), "format": "actionclip", "sha256": hashlib.sha256(data).hexdigest()}],
    )
    for ours, theirs in zip(_features(actionclip.create_model("team-ours")), _features(model)):
        assert torch.equal(ours, theirs)
    assert main(["models", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["team-ours"]["source"] == str(path) and listed["team-ours"]["cached"] is True
    assert main(["models"]) == 0
    assert re.search(r"team-ours\s+actionclip\s.*cached", capsys.readouterr().out)


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "url": "http://127.0.0.1/x.pt", "format": "official", "visual_prompt": "Transf", "sha": "00"}, "unknown key(s) sha; known: "),
    ({"name": "x", "url": "http://127.0.0.1/x.pt", "format": "official"}, "format official needs visual_prompt"),
    ({"name": "x", "url": "ftp://127.0.0.1/x.pt", "format": "videox"}, "is not an http://, https:// or file:// URL"),
    ({"name": "x", "url": "http://127.0.0.1/x.pt", "format": "caffe"}, "format: expected one of actionclip, official"),
    ({"name": "x", "url": "http://127.0.0.1/x.pt", "format": "videox", "sha256": "abc"}, "sha256: has 3 digits"),
])  # fmt: skip
def test_a_mistake_in_a_user_list_is_one_line_naming_the_file_and_entry(tmp_path, monkeypatch, capsys, entry, message):
    path = _user_list(tmp_path, monkeypatch, [entry])
    line = _cli_error(capsys, ["models"])
    assert line.startswith(f"error: {path}: entry 1 (x): ") and message in line


@pytest.mark.parametrize("key, value", [
    ("filename", "../../victim.txt"), ("filename", "folder/x.pt"), ("filename", ".."), ("name", ".."),
    ("url", "http://127.0.0.1:9/files/%2e%2e"),
])  # fmt: skip
def test_names_in_a_user_list_are_plain_file_names_and_nothing_outside_the_cache_is_touched(
    tmp_path, monkeypatch, capsys, cache, key, value
):
    victim = cache.parent / "victim.txt"  # where "../../victim.txt" in the cache's files/ folder would land
    victim.parent.mkdir(parents=True)
    victim.write_text("the user's file")
    entry = {"name": "x", "url": "http://127.0.0.1:9/x.pt", "format": "videox", key: value}
    path = _user_list(tmp_path, monkeypatch, [entry])
    line = _cli_error(capsys, ["models"])
    assert line.startswith(f"error: {path}: entry 1 ") and "is not a plain file name" in line
    if key != "name":  # a name ".." is a folder that exists, never taken for a published name
        with pytest.raises(CheckpointError, match="is not a plain file name"):
            actionclip.create_model(entry["name"])
    assert victim.read_text() == "the user's file"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_a_malicious_pickle_from_a_download_is_never_executed(server, tmp_path, monkeypatch, capsys, cache):
    marker = tmp_path / "marker"
    buffer = io.BytesIO()
    torch.save({"model_state_dict": {"visual.proj": torch.zeros(2)}, "fusion_model_state_dict": _Payload(marker)}, buffer)
    data = buffer.getvalue()
    server.files["/evil.pt"] = data
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/evil.pt", data)])
    line = _cli_error(capsys, _predict("team-tiny"))
    assert "refused" in line and "evil.pt" in line
    assert not marker.exists()
    assert not (cache / "models" / "team-tiny").exists()


def test_the_builtin_list_names_every_published_family_and_only_published_checksums():
    found = registry.read_list(registry.BUILTIN)
    by_format = {}
    for entry in found:
        by_format.setdefault(entry.format, []).append(entry)
    assert len(by_format["official"]) == 4 and len(by_format["mmaction2"]) == 6 and len(by_format["vificlip"]) == 15
    assert {e.file_name for e in by_format["videox"]} >= {"k400_32_8.pth", "k400_16_16.pth", "zero.pth", "few_ucf_16.pth"}
    assert "microsoft/xclip-base-patch32" in {e.hub_id for e in by_format["hf_xclip"]}
    for entry in found:
        assert entry.accuracy and entry.accuracy.get("source") and entry.license
        assert entry.sha256 is None  # no publisher states a whole sha256
        if entry.sha256_prefix:  # mmaction2's: the hex suffix of the file name
            assert entry.file_name.endswith(f"-{entry.sha256_prefix}.pth")
    assert sum(1 for e in found if e.sha256_prefix) == 2
    assert not hub.is_published("ViT-B-32") and hub.is_published("xclip-b16-8f-k400")


def test_cache_root_follows_actionclip_cache(cache):
    assert hub_cache() == cache


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache holding ``microsoft/xclip-tiny``, and huggingface_hub offline: the real resolution of a
    hub id by huggingface_hub, without a network."""
    import huggingface_hub.constants

    from test_xclip import tiny_hf_xclip

    hf = tiny_hf_xclip()
    repo = tmp_path / "hf" / "models--microsoft--xclip-tiny"
    hf.save_pretrained(repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return hf, repo / "snapshots" / ("a" * 40)


def test_hub_ids_load_through_huggingface_hub(hf_cache, tmp_path, monkeypatch, cache):
    hf, snapshot = hf_cache
    direct = actionclip.from_hf_xclip("microsoft/xclip-tiny")
    local = actionclip.from_hf_xclip(snapshot)
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), local.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"microsoft/xclip-other: cannot download it from the Hugging Face hub .*HF_ENDPOINT"):
        actionclip.from_hf_xclip("microsoft/xclip-other")
    _user_list(tmp_path, monkeypatch, [{"name": "microsoft/xclip-tiny", "hub_id": "microsoft/xclip-tiny", "format": "hf_xclip"}])
    named = actionclip.create_model("microsoft/xclip-tiny")
    assert isinstance(named, actionclip.XCLIP)
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), local.state_dict().values()))
    assert (cache / "models" / "microsoft--xclip-tiny" / "model.safetensors").is_file()


def test_videox_files_and_transformers_archives_load_by_name(hf_cache, server, tmp_path, monkeypatch):
    import zipfile

    from test_xclip import save_as_videox, tiny_hf_xclip, videox_state_dict

    hf, snapshot = hf_cache
    save_as_videox(tmp_path / "k400_tiny.pth", videox_state_dict(tiny_hf_xclip(heads=1, seed=1)), monkeypatch)
    videox = (tmp_path / "k400_tiny.pth").read_bytes()
    server.files["/releases/k400_tiny.pth"] = videox
    with zipfile.ZipFile(tmp_path / "tiny-hf.zip", "w") as bundle:
        for name in ("config.json", "model.safetensors"):
            bundle.write(snapshot / name, f"xclip-tiny/{name}")
        bundle.writestr("../../outside/evil.txt", "never extracted")
    hf_zip = (tmp_path / "tiny-hf.zip").read_bytes()
    _user_list(tmp_path, monkeypatch, [
        {"name": "team-videox", "url": server.url + "/releases/k400_tiny.pth", "format": "videox",
         "sha256": hashlib.sha256(videox).hexdigest()},
        {"name": "team-hf", "url": (tmp_path / "tiny-hf.zip").as_uri(), "format": "hf_xclip", "sha256": hashlib.sha256(hf_zip).hexdigest()},
    ])  # fmt: skip
    by_name = actionclip.create_model("team-videox")
    direct = actionclip.from_videox_checkpoint(tmp_path / "k400_tiny.pth")
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), direct.state_dict().values()))
    by_name = actionclip.create_model("team-hf")
    direct = actionclip.from_hf_xclip(snapshot)
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), direct.state_dict().values()))
    assert not (tmp_path / "outside").exists() and not list(tmp_path.parent.glob("outside"))


def test_vificlip_files_load_by_name_with_their_base(server, tmp_path, monkeypatch):
    from test_vificlip_fidelity import FIXTURES, write_base

    data = (FIXTURES / "vificlip_tiny.pth").read_bytes()
    server.files["/vificlip_tiny.pth"] = data
    base = write_base(tmp_path / "base.pt")
    _user_list(
        tmp_path,
        monkeypatch,
        [
            {
                "name": "team-vifi",
                "url": server.url + "/vificlip_tiny.pth",
                "format": "vificlip",
                "base": str(base),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
    )
    by_name = actionclip.create_model("team-vifi")
    direct = actionclip.from_vificlip_checkpoint(FIXTURES / "vificlip_tiny.pth", base)
    assert {**by_name.config.to_dict(), "pretrained": None} == {**direct.config.to_dict(), "pretrained": None}
    assert by_name.config.normalization == "imagenet" and by_name.config.templates == ["a photo of a {}."]
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), direct.state_dict().values()))


def test_mmaction2_files_load_by_name_against_their_sha256_prefix(server, tmp_path, monkeypatch):
    from test_mmaction2_fidelity import FIXTURE, token_embedding

    pieces = torch.load(FIXTURE, weights_only=True)
    stream = io.BytesIO()  # the checkpoint as mmengine saved it
    torch.save({"meta": pieces["meta"], "state_dict": {**pieces["state_dict"], "clip.token_embedding.weight": token_embedding()}}, stream)
    data = stream.getvalue()
    prefix = hashlib.sha256(data).hexdigest()[:8]  # mmaction2 publishes the first 8 digits in the file name
    name = f"actionclip_tiny_20230801-{prefix}.pth"
    server.files["/mmaction/" + name] = data
    _user_list(
        tmp_path, monkeypatch, [{"name": "team-mm", "url": f"{server.url}/mmaction/{name}", "format": "mmaction2", "sha256_prefix": prefix}]
    )
    model = actionclip.create_model("team-mm")
    assert model.config.temporal_ln_eps == 1e-5 and model.config.num_frames == 4
    with torch.no_grad():
        assert (model.encode_video(pieces["inputs"]) - pieces["video_features"]).abs().max() <= 1e-4


def test_a_name_given_another_file_is_downloaded_and_converted_again(tiny, server, tmp_path, monkeypatch, cache):
    model, data = tiny
    other = _official_bytes(actionclip.create_model("test-tiny", visual_prompt="Transf", num_frames=4, seed=1))
    server.files["/v1/tiny.pt"], server.files["/v2/tiny.pt"] = data, other
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/v1/tiny.pt", data)])
    first = _features(actionclip.create_model("team-tiny"))
    _user_list(tmp_path, monkeypatch, [_official_entry(server.url + "/v2/tiny.pt", other)])  # the team's new release
    second = _features(actionclip.create_model("team-tiny"))
    assert [path for path, _ in server.requests] == ["/v1/tiny.pt", "/v2/tiny.pt"]
    assert not torch.equal(first[0], second[0])
    assert json.loads((cache / "models" / "team-tiny" / "source.json").read_text())["sha256"] == hashlib.sha256(other).hexdigest()


def test_a_file_saved_by_hand_in_the_cache_is_used(tiny, cache):
    _, data = tiny
    (cache / "files").mkdir(parents=True)
    (cache / "files" / "actionclip-vit-b-32-8f-k400.pt").write_bytes(data)  # downloaded from the Drive page by hand
    with pytest.warns(hub.UnverifiedDownloadWarning):
        model = actionclip.create_model("actionclip-vit-b-32-8f-k400")
    assert model.config.visual_prompt == "Transf" and model.config.num_frames == 8


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "v.mp4", "--labels", "a,b"],
        ["export", "--output", "out"],
        ["serve"],
        ["embed", "v.mp4", "--output", "out"],
        ["search", "collection", "a query"],
    ],
)
def test_every_command_that_loads_a_model_takes_a_name_and_a_mirror(argv, capsys):
    from actionclip.checkpoints.registry import entries
    from actionclip.cli.main import build_parser
    from actionclip.cli.model_options import warn_if_random

    name = next(iter(entries()))
    args = build_parser().parse_args([*argv, "--model", name, "--hub-mirror", "http://127.0.0.1:9/"])
    assert args.model == name and args.hub_mirror == "http://127.0.0.1:9/"
    warn_if_random(args)  # a published name has its weights
    args.model = "ViT-B-32"
    warn_if_random(args)
    assert capsys.readouterr().err == "warning: ViT-B-32 has random weights (no --pretrained): its scores mean nothing\n"
