"""`actionclip serve`: the API through FastAPI's test client and against a real process on 127.0.0.1."""

import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")

import actionclip  # noqa: E402
from actionclip.cli.main import main  # noqa: E402
from actionclip.serve.app import MAX_LABELS, ServeSettings  # noqa: E402
from serve_helpers import (  # noqa: E402
    ARM_WRESTLING,
    EYE_MAKEUP,
    LABELS,
    alive,
    client_for,
    descendants,
    multipart_part,
    needs_peer_videos,
    serve_process,
    tiny_model,
    video_files,
)

pytestmark = needs_peer_videos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory)


def predicted(model, paths, labels, **options):
    return actionclip.predict([str(p) for p in paths], labels, model, workers=0, top_k=len(labels), **options)


def assert_same(result, expected, name):
    assert result["video"] == name
    assert result["labels"] == expected["labels"]
    assert result["scores"] == pytest.approx(expected["scores"], abs=1e-5)


def test_results_in_upload_order_equal_predict(tiny, tmp_path):
    model, _ = tiny
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    client, uploads = client_for(model, tmp_path)
    with client:
        answer = client.post("/v1/classify", files=video_files(EYE_MAKEUP, bad, ARM_WRESTLING), data={"top_k": "4"})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["video"] for r in results] == [EYE_MAKEUP.name, "notes.mp4", ARM_WRESTLING.name]
    expected = predicted(model, [EYE_MAKEUP, ARM_WRESTLING], LABELS)  # the default labels
    assert_same(results[0], expected[0], EYE_MAKEUP.name)
    assert_same(results[2], expected[1], ARM_WRESTLING.name)
    assert set(results[1]) == {"video", "error"} and "cannot open as a video" in results[1]["error"]
    assert set(results[0]) == {"video", "labels", "scores"}
    assert list(uploads.iterdir()) == []


def test_a_model_with_its_own_normalisation_is_served_as_predict_scores_it(tmp_path):
    model = actionclip.create_model("test-tiny", seed=0).eval()
    model.config.normalization = "imagenet"  # as an imported ViFi-CLIP file's
    client, _ = client_for(model, tmp_path)
    with client:
        result = client.post("/v1/classify", files=video_files(ARM_WRESTLING), data={"top_k": "4"}).json()["results"][0]
    assert_same(result, predicted(model, [ARM_WRESTLING], LABELS)[0], ARM_WRESTLING.name)


def test_labels_views_templates_top_k_and_thumbnails_per_request(tiny, tmp_path):
    model, _ = tiny
    labels = ["dancing", "arm wrestling", "cooking"]
    client, _ = client_for(model, tmp_path)
    with client:
        multiview = client.post(
            "/v1/classify", files=video_files(ARM_WRESTLING), data={"labels": json.dumps(labels), "views": "3x3", "top_k": "2"}
        ).json()["results"][0]
        plain = client.post(
            "/v1/classify",
            files=video_files(ARM_WRESTLING),
            data={"labels": ",".join(labels), "templates": "label_only", "thumbnails": "true"},
        ).json()["results"][0]
    expected = predicted(model, [ARM_WRESTLING], labels, views="3x3")[0]
    assert multiview["labels"] == expected["labels"][:2]
    assert multiview["scores"] == pytest.approx(expected["scores"][:2], abs=1e-5)
    assert_same(plain, predicted(model, [ARM_WRESTLING], labels, templates="label_only")[0], ARM_WRESTLING.name)
    assert len(plain["thumbnails"]) == model.config.num_frames
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in plain["thumbnails"])
    assert multiview["scores"] != pytest.approx(predicted(model, [ARM_WRESTLING], labels)[0]["scores"][:2], abs=1e-4)


def test_concurrent_requests_share_batches_and_text_features(tiny, tmp_path):
    model, _ = tiny
    client, _ = client_for(model, tmp_path, max_batch=8, max_wait_ms=400)
    answers = [None] * 6

    def send(i):
        answers[i] = client.post("/v1/classify", files=video_files([ARM_WRESTLING, EYE_MAKEUP][i % 2]))

    with client:
        encoded = client.app.state.texts.encoded  # the default labels, encoded at start-up
        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = client.app.state.batcher.batches
    expected = predicted(model, [ARM_WRESTLING, EYE_MAKEUP], LABELS)
    for i, answer in enumerate(answers):
        assert answer.status_code == 200
        (result,) = answer.json()["results"]
        assert result["labels"] == expected[i % 2]["labels"][:5]
        assert result["scores"] == pytest.approx(expected[i % 2]["scores"], abs=1e-5)
    assert sum(batches) == 6 and max(batches) > 1  # videos of several requests went through the model together
    assert client.app.state.texts.encoded == encoded == 1


def truncated_copy(tmp_path):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(ARM_WRESTLING.read_bytes()[:20000])  # the index is at the end: unreadable
    return path


BAD_REQUESTS = {
    "not a video": (dict(files=[("video", ("a.mp4", b"this is text"))]), 422, "cannot open as a video"),
    "zero bytes": (dict(files=[("video", ("empty.mp4", b""))]), 422, "empty file (0 bytes)"),
    "truncated": ("truncated", 422, "cannot open as a video"),
    "over the limit": (dict(files=[("video", ("big.mp4", b"0" * (2 << 20)))]), 413, "over the limit of 1 MB (--max-upload-mb)"),
    "no labels": (dict(data={"labels": " , "}), 422, "the field 'labels' is empty"),
    "2,000 labels": (
        dict(data={"labels": ",".join(f"class {i}" for i in range(2000))}),
        422,
        f"2000 labels: at most {MAX_LABELS} per request",
    ),
    "duplicate labels": (dict(data={"labels": "a,b,a"}), 422, "labels given more than once: ['a']"),
    "wrong field name": (dict(files=[("file", ("a.mp4", b"x"))]), 422, "a file in the field 'file': send videos in the field 'video'"),
    "no video": (dict(files=[("labels", (None, "a,b"))]), 422, "no video: send one or more files in the field 'video'"),
    "unknown field": (dict(data={"label": "a,b"}), 422, "unknown field 'label'"),
    "bad views": (dict(data={"views": "10x2"}), 422, "crops 1 or 3"),
    "too many views": (dict(data={"views": "20x3"}), 422, "at most 30 views"),
    "bad top_k": (dict(data={"top_k": "0"}), 422, "top_k must be an integer >= 1"),
    "a Unicode digit as top_k": (dict(data={"top_k": "²"}), 422, "top_k must be an integer >= 1, got '²'"),
    "labels nested 100,000 deep": (dict(data={"labels": "[" * 100_000}), 422, "labels: not a valid JSON list (nested too deep)"),
    "templates nested 100,000 deep": (dict(data={"templates": "[" * 100_000}), 422, "templates: actionclip, label_only, or a JSON list"),
    "100 labels x 10,000 templates": (
        dict(data={"labels": ",".join(f"c{i}" for i in range(100)), "templates": json.dumps(["{}"] * 10_000)}),
        422,
        "100 labels x 10000 templates is 1000000 texts to encode: at most 16000 per request",
    ),
    "a template path": (dict(data={"templates": "/etc/passwd"}), 422, "templates: actionclip, label_only, or a JSON list"),
    "not multipart": (dict(files=None, data={"labels": "a"}), 415, "send the videos as multipart/form-data"),
    "bad API key": (dict(headers={"X-API-Key": "wrong"}), 401, "missing or wrong API key"),
    "no API key": (dict(headers={}), 401, "missing or wrong API key"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_a_4xx_and_the_next_request_is_served(case, tiny, tmp_path):
    model, _ = tiny
    request, status, message = BAD_REQUESTS[case]
    if request == "truncated":
        request = dict(files=video_files(truncated_copy(tmp_path)))
    key = "API" in case
    client, uploads = client_for(model, tmp_path, max_upload_mb=1, api_key="secret" if key else None)
    good_headers = {"X-API-Key": "secret"} if key else {}
    request = {"files": video_files(EYE_MAKEUP), "headers": good_headers, **request}
    with client:
        answer = client.post("/v1/classify", **request)
        assert answer.status_code == status, answer.text
        assert message in answer.json()["detail"]
        good = client.post("/v1/classify", files=video_files(ARM_WRESTLING), headers=good_headers)
    assert good.status_code == 200 and "scores" in good.json()["results"][0]
    assert list(uploads.iterdir()) == []


def test_api_key_guards_every_api_call_but_health(tiny, tmp_path):
    model, _ = tiny
    client, _ = client_for(model, tmp_path, api_key="secret")
    with client:
        assert client.get("/v1/health").json() == {"status": "ok", "api_key_required": True}
        for path in ("/v1/model", "/v1/label-sets"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer secret"}).status_code == 200


def test_model_label_sets_page_and_openapi(tiny, tmp_path):
    model, _ = tiny
    client, _ = client_for(model, tmp_path, default_labels=None)
    with client:
        info = client.get("/v1/model").json()
        sets = client.get("/v1/label-sets").json()
        page = client.get("/")
        schema = client.get("/openapi.json").json()
        no_labels = client.post("/v1/classify", files=video_files(ARM_WRESTLING))
    assert info["arch"] == "actionclip" and info["visual_prompt"] == "Transf" and info["frames"] == 8
    assert info["precision"] == "fp32" and info["device"] == "cpu" and info["default_labels"] is None
    assert {name: len(labels) for name, labels in sets["labels"].items()} == {"kinetics400": 400, "ucf101": 101, "hmdb51": 51}
    assert sets["labels"]["ucf101"][0] == "apply eye makeup" and sets["labels"]["kinetics400"][-1] == "zumba"
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    form = schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"video", "labels", "top_k", "views", "templates", "thumbnails"}
    assert {"401", "413", "415", "422"} <= set(schema["paths"]["/v1/classify"]["post"]["responses"])
    assert no_labels.status_code == 422 and "this server has no default label set" in no_labels.json()["detail"]


def _reply(connection) -> str:
    """The whole answer the server sends before it closes or goes quiet."""
    reply = b""
    while not reply.endswith(b"}"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply.decode()


def _multipart_head(boundary: str, size: int, port: int) -> bytes:
    return (
        f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: secret\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


def test_a_real_server_process(tiny, tmp_path):
    _, checkpoint = tiny
    tmpdir = tmp_path / "tmp"
    key = {"X-API-Key": "secret"}
    with serve_process(
        checkpoint, tmpdir, "--labels", ",".join(LABELS), "--max-upload-mb", "1", "--workers", "1", "--api-key", "secret"
    ) as (url, server):
        port = int(url.rsplit(":", 1)[1])
        info = httpx.get(f"{url}/v1/model", headers=key).json()
        assert info["default_labels"] == LABELS and info["max_upload_mb"] == 1
        with open(ARM_WRESTLING, "rb") as a, open(EYE_MAKEUP, "rb") as b:
            answer = httpx.post(
                f"{url}/v1/classify", files=[("video", (ARM_WRESTLING.name, a)), ("video", (EYE_MAKEUP.name, b))], headers=key, timeout=60
            )
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["video"] for r in results] == [ARM_WRESTLING.name, EYE_MAKEUP.name]
        assert all(sorted(r["labels"]) == sorted(LABELS) for r in results)  # the default labels

        for case, (request, status, message) in BAD_REQUESTS.items():
            if request == "truncated":
                request = dict(files=video_files(truncated_copy(tmp_path)))
            request = {"files": video_files(EYE_MAKEUP), "headers": key, **request}
            answer = httpx.post(f"{url}/v1/classify", **request, timeout=60)
            assert answer.status_code == status and message in answer.json()["detail"], (case, answer.text)
            good = httpx.post(f"{url}/v1/classify", files=video_files(ARM_WRESTLING), headers=key, timeout=60)
            assert good.status_code == 200 and "scores" in good.json()["results"][0], case
        assert not any(tmpdir.glob("actionclip-serve-*"))

        # A body announced over the limit is refused before any of it is sent.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(_multipart_head("xx", 50 << 20, port))
            reply = _reply(connection)
        assert reply.startswith("HTTP/1.1 413") and "over the limit of 1 MB" in reply

        # A client that goes away mid-upload leaves no file behind.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(_multipart_head("xx", 900_000, port) + multipart_part("xx") + b"0" * 300_000)
            deadline = time.monotonic() + 10
            while not any(tmpdir.glob("actionclip-serve-*/*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert any(tmpdir.glob("actionclip-serve-*/*"))  # the upload was being written
        deadline = time.monotonic() + 10
        while any(tmpdir.glob("actionclip-serve-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(tmpdir.glob("actionclip-serve-*"))

        # So does one that goes away while its videos wait for the model.
        views = b'--xx\r\nContent-Disposition: form-data; name="views"\r\n\r\n10x3\r\n'  # slower: 30 views each
        body = views + b"".join(multipart_part("xx") + EYE_MAKEUP.read_bytes() + b"\r\n" for _ in range(3)) + b"--xx--\r\n"
        assert len(body) < 1 << 20  # under --max-upload-mb: read whole, then decoded and queued
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(_multipart_head("xx", len(body), port) + body)
        deadline = time.monotonic() + 20
        while any(tmpdir.glob("actionclip-serve-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(tmpdir.glob("actionclip-serve-*"))

        # A file streamed past the limit (chunked, no Content-Length) is refused while it streams: the answer comes
        # while the request is still unfinished.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            head = (
                f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: secret\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: multipart/form-data; boundary=xx\r\n\r\n"
            ).encode()
            chunks = [multipart_part("xx")] + [b"0" * 65536] * 24  # 1.5 MB, and no last chunk
            connection.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks))
            reply = _reply(connection)
        assert reply.startswith("HTTP/1.1 413") and "over the limit of 1 MB" in reply

        with open(EYE_MAKEUP, "rb") as b:
            answer = httpx.post(
                f"{url}/v1/classify", files={"video": (EYE_MAKEUP.name, b)}, data={"labels": "a,b"}, headers=key, timeout=60
            )
        assert answer.status_code == 200 and set(answer.json()["results"][0]["labels"]) == {"a", "b"}

        # Killed outright (kill -9, the OOM killer, a supervisor's timeout), it leaves no decoding process behind.
        children = descendants(server.pid)
        assert children  # the decoder (and multiprocessing's resource tracker)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        deadline = time.monotonic() + 10
        while (left := [pid for pid in children if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:  # the test's own processes, by their id, before it fails
            os.kill(pid, signal.SIGKILL)
        assert left == [], f"processes of the killed server still running: {left}"
    assert not any(tmpdir.glob("actionclip-serve-*"))
    assert "Traceback" not in (tmp_path / f"serve-{port}.log").read_text()


def test_command_line_mistakes_are_one_line(tiny, tmp_path, capsys):
    _, checkpoint = tiny
    for args, message in (
        (["--max-batch", "0"], "error: --max-batch must be >= 1, got 0"),
        (["--labels", "a,a"], "error: labels given more than once: ['a']"),
        (["--views", "2x2"], "crops 1 or 3"),
        (["--max-wait-ms", "inf"], "error: --max-wait-ms must be a finite number, got inf"),
        (["--max-upload-mb", "inf"], "error: --max-upload-mb must be a finite number, got inf"),
        (["--api-key", ""], "error: the API key is empty (--api-key or ACTIONCLIP_API_KEY)"),
        (["--max-wait-ms", "1e9"], "error: --max-wait-ms must be >= 0 and at most 10000, got 1e+09"),
        (["--max-upload-mb", "0"], "error: --max-upload-mb must be > 0 and at most 100000, got 0"),
        (["--cors", "app.example"], "error: --cors: 'app.example' is not an origin"),
    ):
        code = main(["serve", "--checkpoint", str(checkpoint), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_an_empty_api_key_is_refused_at_start_up(tiny, monkeypatch, capsys):
    _, checkpoint = tiny
    monkeypatch.setenv("ACTIONCLIP_API_KEY", "")
    assert main(["serve", "--checkpoint", str(checkpoint)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the API key is empty")
    with pytest.raises(ValueError, match="the API key is empty"):
        ServeSettings(api_key="  ")


def test_a_crashed_decoding_process_is_replaced(tiny, tmp_path):
    model, _ = tiny
    client, _ = client_for(model, tmp_path, workers=1)
    with client:
        assert client.post("/v1/classify", files=video_files(EYE_MAKEUP)).status_code == 200
        pool = client.app.state.batcher.pool
        (worker,) = pool._processes.values()
        worker.kill()  # as a file that crashes FFmpeg, or the OOM killer, would
        worker.join()
        answer = client.post("/v1/classify", files=video_files(ARM_WRESTLING))
        assert answer.status_code == 200 and "scores" in answer.json()["results"][0]
        assert client.app.state.batcher.pool is not pool


def test_an_xclip_model_is_served_as_predict_scores_it(tmp_path):
    model = actionclip.create_model("test-tiny", arch="xclip", seed=0).eval()
    client, _ = client_for(model, tmp_path)
    with client:
        answer = client.post("/v1/classify", files=video_files(ARM_WRESTLING), data={"top_k": "4"})
    assert answer.status_code == 200
    assert_same(answer.json()["results"][0], predicted(model, [ARM_WRESTLING], LABELS)[0], ARM_WRESTLING.name)
